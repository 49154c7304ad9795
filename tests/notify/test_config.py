"""notifications.toml and LABLINK_NOTIFY_*: what is read, and what is refused, in one line
naming the file, the key, the value and the reason."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lablink.errors import NotifyConfigError
from lablink.notify.config import Email, Webhook, load_channels, load_file
from lablink.settings import Settings
from tests.support.serve import LABLINK

GOOD = """
dashboard_url = "https://lablink.lab.example/"

[[channel]]
name = "ops"
kind = "webhook"
url = "https://hooks.lab.example/lablink"
secret = "0123456789abcdef-secret"
severities = ["critical"]
equipment = ["power_supply_1"]
job_tags = ["overnight"]
transitions = ["raised", "cleared"]
timeout = 3
give_up_after = 3600

[[channel]]
name = "lab-mail"
kind = "email"
host = "smtp.lab.example"
from = "lablink@lab.example"
to = ["oncall@lab.example"]
username = "lablink"
password = "pw"
"""


def write(folder: Path, text: str, mode: int = 0o600) -> Path:
    path = folder / "notifications.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_a_good_file_gives_its_channels(tmp_path: Path) -> None:
    ops, mail = load_file(write(tmp_path, GOOD))
    assert isinstance(ops.target, Webhook)
    assert ops.routing.severities == ("critical",)
    assert ops.routing.transitions == ("raised", "cleared")
    assert (ops.timeout, ops.give_up_after, ops.retry_initial, ops.retry_max) == (
        3.0,
        3600.0,
        5.0,
        600.0,
    )
    assert ops.dashboard_url == "https://lablink.lab.example/"
    assert isinstance(mail.target, Email)
    assert (mail.target.port, mail.target.starttls) == (587, True)
    assert mail.routing.transitions == ("raised",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('url = "https://hooks', 'url = "ftp://hooks'),
            "channel[0].url = 'ftp://hooks.lab.example/lablink':"
            " expected an http:// or https:// URL",
        ),
        (
            ('severities = ["critical"]', 'severities = ["fatal"]'),
            "channel[0].severities = 'fatal': expected one of info, warning, critical",
        ),
        (("timeout = 3", 'timeout = "3"'), "channel[0].timeout = '3': expected a number"),
        (("timeout = 3", "timeout = 0"), "channel[0].timeout = 0: expected 0.1 to 300"),
        (
            ('secret = "0123456789abcdef-secret"', 'secret = "short"'),
            "channel[0].secret = '***': expected at least 16 characters",
        ),
        (
            ('name = "lab-mail"', 'name = "ops"'),
            "channel[1].name = 'ops': another channel has this name",
        ),
        (
            ('kind = "email"', 'kind = "pager"'),
            "channel[1].kind = 'pager': expected webhook or email",
        ),
        (
            ('job_tags = ["overnight"]', 'tags = ["overnight"]'),
            "channel[0].tags = ['overnight']: not a setting of a webhook channel",
        ),
        (
            ('to = ["oncall@lab.example"]', "to = []"),
            "channel[1].to = []: expected at least one address",
        ),
        (
            ('transitions = ["raised", "cleared"]', 'transitions = ["fixed"]'),
            "channel[0].transitions = 'fixed': expected one of raised, acknowledged, cleared",
        ),
        (('[[channel]]\nname = "ops"', '[[channel]\nname = "ops"'), "(syntax) = None:"),
    ],
)
def test_a_bad_file_is_refused_naming_file_key_value_and_reason(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(NotifyConfigError) as refused:
        load_file(path)
    assert str(refused.value).startswith(f"{path}: {message}")


def test_a_file_others_may_read_is_warned_about(tmp_path: Path) -> None:
    with capture_logs() as logs:
        load_file(write(tmp_path, GOOD, mode=0o644))
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert "chmod 600" in warning["event"]
    assert warning["mode"] == "0o644"
    with capture_logs() as logs:
        load_file(write(tmp_path, GOOD, mode=0o600))
    assert [e for e in logs if e["log_level"] == "warning"] == []


def test_one_channel_each_from_the_environment(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        notify_webhook_url="http://127.0.0.1:9999/hook",
        notify_webhook_secret="0123456789abcdef",
        notify_email_host="smtp.lab.example",
        notify_email_from="lablink@lab.example",
        notify_email_to="a@lab.example, b@lab.example",
        notify_email_user="lablink",
        notify_email_password="pw",
    )
    hook, mail = load_channels(settings)
    assert (hook.name, hook.kind, mail.name, mail.kind) == ("webhook", "webhook", "email", "email")
    assert isinstance(mail.target, Email)
    assert mail.target.to == ("a@lab.example", "b@lab.example")
    assert load_channels(Settings(data_dir=tmp_path)) == []


def test_a_bad_variable_is_named(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, notify_webhook_url="http://127.0.0.1:9/h")
    with pytest.raises(NotifyConfigError, match=r"^environment: LABLINK_NOTIFY_WEBHOOK_SECRET"):
        load_channels(settings)


def test_the_file_and_the_variables_together_are_refused(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    settings = Settings(
        data_dir=tmp_path,
        notify_webhook_url="http://127.0.0.1:9/h",
        notify_webhook_secret="0123456789abcdef",
    )
    with pytest.raises(NotifyConfigError, match="configure channels in one place only"):
        load_channels(settings)


@pytest.mark.e2e
def test_serve_with_a_bad_file_exits_2_with_one_line(tmp_path: Path) -> None:
    # A real process: serve configures the process's logging, which must not leak into tests.
    path = write(tmp_path, GOOD.replace("timeout = 3", "timeout = -1"))
    env = {**os.environ, "LABLINK_NATS": "off", "LABLINK_AUTH": "off"}
    result = subprocess.run(
        [LABLINK, "serve", "--data-dir", str(tmp_path), "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"lablink: {path}: channel[0].timeout = -1: expected 0.1 to 300"
    )
    assert not (tmp_path / "scheduler.db").exists()  # refused before anything was opened
