"""Cluster mode's settings (issue 18): LABLINK_CLUSTER needs the cluster's servers, the lease
TTL is bounded by JetStream's smallest, and each replica has a name of its own by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from lablink.settings import Settings


def test_cluster_mode_needs_the_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABLINK_CLUSTER", "1")
    monkeypatch.delenv("LABLINK_NATS_URL", raising=False)
    with pytest.raises(ValueError, match="LABLINK_CLUSTER=1 needs LABLINK_NATS_URL"):
        Settings.from_env()
    monkeypatch.setenv("LABLINK_NATS_URL", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("LABLINK_LEASE_SECONDS", "0.5")
    with pytest.raises(ValueError, match=r"lease seconds 0\.5"):
        Settings.from_env()
    monkeypatch.setenv("LABLINK_LEASE_SECONDS", "7")
    settings = Settings.from_env()
    assert (settings.cluster, settings.lease_seconds) == (True, 7.0)


def test_replicas_on_one_host_are_told_apart_by_their_data_dirs(tmp_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "one")
    other = Settings(data_dir=tmp_path / "other")
    assert one.replica != other.replica
    assert one.replica == Settings(data_dir=tmp_path / "one").replica
    assert Settings(data_dir=tmp_path, replica_id="lab-pc-2").replica == "lab-pc-2"
