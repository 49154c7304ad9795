"""The CSRF secret outlives a restart: a browser keeps its CSRF cookie across one, so a form
(the sign-in form first) signed before the restart must still be accepted after it."""

from __future__ import annotations

import stat
from pathlib import Path

from lablink.dashboard.plugin import csrf_secret


def test_the_secret_is_made_once_kept_0600_and_read_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = csrf_secret(data)
    assert len(first) == 64
    path = data / "dashboard.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert csrf_secret(data) == first
    # A damaged file is replaced, never used as it is.
    path.write_text("short\n")
    second = csrf_secret(data)
    assert second != first
    assert len(second) == 64
    assert csrf_secret(data) == second
    # The app alone (no data directory): a secret of its own, each time.
    assert csrf_secret(None) != csrf_secret(None)
