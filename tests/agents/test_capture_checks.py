"""What an agent checks of a capture before it starts (no bus, no process): ``decimate`` with
the other acquisition parameters, and the capture limits of lab.toml."""

from __future__ import annotations

import pytest

from lablink.equipment_agent.acquisition import CaptureLimits
from lablink.equipment_agent.config import ConfigError, parse_config
from lablink.instruments.checks import check_job
from lablink.instruments.drivers import MODELS
from lablink.instruments.errors import InvalidParameter


def test_decimate_is_checked_with_the_other_acquisition_parameters() -> None:
    scope = MODELS["oscilloscope"]
    with pytest.raises(InvalidParameter) as caught:
        check_job(scope, "scope_1", "acquisition", {"duration": 1, "decimate": "no"})
    assert (caught.value.parameter, caught.value.value) == ("decimate", "no")
    assert "must be true or false" in str(caught.value)
    check_job(scope, "scope_1", "acquisition", {"duration": 1, "decimate": False})


def test_the_capture_limits_are_read_from_lab_toml_and_checked() -> None:
    instruments = [{"id": "scope_1", "kind": "oscilloscope", "resource": "X", "backend": "@sim"}]
    config = parse_config(
        {
            "agent": {"id": "a", "keep_free_bytes": 0, "max_capture_bytes": 1024},
            "instruments": instruments,
        }
    )
    assert config.limits == CaptureLimits(keep_free_bytes=0, max_capture_bytes=1024)
    assert parse_config({"instruments": instruments}).limits == CaptureLimits(
        keep_free_bytes=256 * 1024**2, max_capture_bytes=8 * 1024**3
    )
    with pytest.raises(ConfigError) as caught:
        parse_config({"agent": {"max_capture_bytes": "big"}, "instruments": instruments})
    assert (caught.value.key, caught.value.value) == ("agent.max_capture_bytes", "big")
