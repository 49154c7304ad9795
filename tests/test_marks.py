"""The markers hold: a test that starts a nats-server or a `lablink` process without its mark
fails, so the fast core (`-m "not nats and not e2e and not slow"`) needs neither."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lablink.bus.server import NatsServer, nats_server_binary
from tests.support.marks import ChildWatch, needed_marks

LABLINK = str(Path(sys.executable).parent / "lablink")


@pytest.mark.parametrize(
    ("argv", "env", "marks"),
    [
        (["/venv/bin/nats-server", "-c", "x.conf"], {}, {"nats"}),
        ([LABLINK, "serve", "--port", "8001"], {}, {"e2e", "nats"}),
        ([LABLINK, "scheduler"], {"LABLINK_NATS": "off"}, {"e2e"}),
        ([LABLINK, "relay"], {"LABLINK_NATS_URL": "nats://127.0.0.1:4222"}, {"e2e"}),
        ([LABLINK, "events", "tail", "--count", "1"], {}, {"e2e"}),
        ([sys.executable, "-m", "lablink", "serve"], {}, {"e2e", "nats"}),
        ([sys.executable, "-m", "lablink.cli", "agent", "--simulated"], {}, {"e2e"}),
        (["chattr", "+i", "/tmp/x"], {}, set()),
        ([sys.executable, "-c", "print(1)"], {}, set()),
    ],
)
def test_the_marks_a_child_needs(argv: list[str], env: dict[str, str], marks: set[str]) -> None:
    assert needed_marks(argv, env) == marks


async def test_an_unmarked_test_cannot_start_a_nats_server(
    tmp_path: Path, children_match_marks: ChildWatch
) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"nats-server .*without @pytest\.mark\.nats"):
        await NatsServer(tmp_path / "nats").start()
    assert len(children_match_marks.refused) == 1
    children_match_marks.refused.clear()  # seen: this test's teardown need not fail


def test_an_unmarked_test_cannot_start_lablink(children_match_marks: ChildWatch) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"lablink version without @pytest\.mark\.e2e"):
        subprocess.run([LABLINK, "version"], check=True)
    children_match_marks.refused.clear()


def test_a_refusal_that_is_swallowed_still_fails_the_test() -> None:
    watch = ChildWatch("tests/x.py::test_y", {"e2e"})
    with pytest.raises(pytest.fail.Exception):
        watch.check([LABLINK, "serve"], {"env": {}})
    assert watch.refused == ["tests/x.py::test_y starts lablink serve without @pytest.mark.nats"]
    with pytest.raises(pytest.fail.Exception, match=r"test_y starts lablink serve without"):
        watch.finish()
    ChildWatch("tests/x.py::test_z", set()).finish()  # nothing refused: nothing to fail


@pytest.mark.nats
def test_a_marked_test_may_start_one(children_match_marks: ChildWatch) -> None:
    done = subprocess.run([nats_server_binary(), "--version"], capture_output=True, check=True)
    assert b"nats-server" in done.stdout
    assert not children_match_marks.refused


def test_a_test_using_the_nats_server_fixture_is_marked(
    nats_server: NatsServer, request: pytest.FixtureRequest
) -> None:
    """No explicit mark here: the fixture gives it."""
    assert request.node.get_closest_marker("nats") is not None
