"""LabLink's settings: embedded defaults, overridden by LABLINK_* environment variables and
command-line options (in that order of precedence: option > environment > default)."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import msgspec

from lablink.domain.validation import zone_problem
from lablink.instruments.protocol import HOLD_LIMIT_SECONDS


def system_timezone() -> str:
    """The machine's IANA zone: $TZ, else /etc/localtime's target, else /etc/timezone, else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    timezone_file = Path("/etc/timezone")
    if timezone_file.exists():
        candidates.append(timezone_file.read_text().strip())
    for name in candidates:
        if name and zone_problem(name) is None:
            return name
    return "UTC"


# Where `lablink serve` runs the agent it runs itself (Settings.embedded_agent).
EMBEDDED_AGENT_MODES = ("inprocess", "process")
# Where `lablink serve` folds the views (Settings.projector): a child process on the other
# core, or a thread of its own (lablink/projections/follower.py).
PROJECTOR_MODES = ("process", "thread")


class Settings(msgspec.Struct, kw_only=True):
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8000
    timezone: str = msgspec.field(default_factory=system_timezone)
    # Simulated instruments take no real time; real ones (and the crash tests) do.
    realtime: bool = False
    # "agents" (equipment agents over NATS; the default with the bus on), "sim" (the
    # simulated bench driven in-process; the default with LABLINK_NATS=off) or "noop".
    executor: str = ""
    # The instruments `lablink serve` runs agents for itself: a lab.toml, or None for the
    # simulated bench. agents=False runs none (they run elsewhere, under `lablink agent`).
    agents: bool = True
    agent_config: Path | None = None
    # Where that agent runs: "inprocess" (an Agent inside `lablink serve`, sharing its GIL)
    # or "process" (a supervised `lablink agent` child, with a core of its own).
    embedded_agent: str = "process"
    projector: str = "process"
    heartbeat_timeout: float = 5.0
    # Executions that ended more than this many days ago leave the executions view, daily
    # (0 = never); the log keeps every event.
    retention_days: float = 30.0
    # The captures' bucket (LABLINK_DATA) holds at most this many bytes of captures: past it
    # the oldest go first, each removal recorded (0 = no bound). 10 GiB.
    data_max_bytes: int = 10 * 1024**3
    # How long the scheduler may fail to record before a scheduler_fault alarm is raised.
    scheduler_fault_grace: float = 30.0
    # How long before its time a fire of an idle job is decided and recorded, its command
    # sent to the agent, which holds it until its time (0: decided at its time).
    fire_lead: float = 0.3
    # How long an API request waits for the views to fold what was committed before it
    # (read-your-writes) before answering 503 naming the lag.
    views_wait: float = 5.0
    # Scheduled backups of the event log (lablink/backup): daily into this directory when set,
    # keeping the newest backup_keep copies.
    backup_dir: Path | None = None
    backup_keep: int = 7
    # Signed checkpoints of the log's hash chain (lablink/audit): every this many events,
    # or this many minutes when anything was appended, and at every graceful stop.
    checkpoint_events: int = 10_000
    checkpoint_minutes: float = 10.0
    # Every update or deletion must then carry a reason (422 naming `reason` without one).
    # Off by default, so the guide's examples keep working as written.
    require_reason: bool = False
    # Instruments with no calibration record are then blocked too (by default only an
    # expired calibration or a quarantine blocks); a warning alarm goes out this many days
    # before a calibration falls due.
    require_calibration: bool = False
    calibration_warn_days: float = 14.0
    # API keys are required unless explicitly switched off (a bench on loopback).
    auth: bool = True
    # Host names the API answers to beyond those of its bound address (DNS rebinding, and
    # the Origin of state-changing requests, are checked against them).
    allowed_hosts: tuple[str, ...] = ()
    # Presented keys that fail from one client address: this many within the window, then
    # 429 until the oldest ages out.
    auth_max_failures: int = 10
    auth_failure_window: float = 60.0
    # NATS: unset url = a private nats-server under data/nats; "off" = no bus at all.
    nats: bool = True
    nats_url: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    nats_credentials: str | None = None
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    nats_replicas: int = 1
    # Cluster mode (issue 18, docs/architecture.md): the record is the JetStream stream
    # LABLINK_LOG on LABLINK_NATS_URL's servers, this data directory keeps a copy and the
    # views; only the replica holding the scheduler lease fires.
    cluster: bool = False
    # This replica's name in the lease; unset: the host name and a hash of the data dir.
    replica_id: str | None = None
    # The lease's TTL: renewed every third of it, dropped by a holder at 0.6 of it.
    lease_seconds: float = 5.0
    # HTTPS for the API (deploy/README.md): a PEM certificate (chain) and its key, both or
    # neither; handed to uvicorn as ssl_certfile / ssl_keyfile.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Alarm notifications (lablink/notify, docs/notifications.md): one webhook and/or one
    # email channel from the environment when data/notifications.toml does not exist.
    notify_webhook_url: str | None = None
    notify_webhook_secret: str | None = None
    notify_email_host: str | None = None
    notify_email_port: int = 587
    notify_email_user: str | None = None
    notify_email_password: str | None = None
    notify_email_from: str | None = None
    notify_email_to: str | None = None
    # The dashboard's address as people reach it (links in notifications); unset:
    # http://<host>:<port>/.
    public_url: str | None = None

    @property
    def executor_kind(self) -> str:
        return self.executor or ("agents" if self.nats else "sim")

    @property
    def db_path(self) -> Path:
        """The event log: the record, what a backup must keep."""
        return self.data_dir / "scheduler.db"

    @property
    def views_path(self) -> Path:
        """The views the API reads, folded from the log: disposable, rebuilt from it."""
        return self.data_dir / "views.db"

    @property
    def replica(self) -> str:
        """This replica's id in the lease: LABLINK_REPLICA_ID, else the host name and a hash
        of the data directory (two replicas on one machine differ)."""
        if self.replica_id:
            return self.replica_id
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
        return f"{socket.gethostname()}-{digest}"

    @property
    def server_url(self) -> str:
        """Where a command on this machine reaches `lablink serve` by default: its host and
        port (a wildcard bind is reached on loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        values: dict[str, object] = {}
        if "LABLINK_DATA_DIR" in env:
            values["data_dir"] = Path(env["LABLINK_DATA_DIR"])
        if "LABLINK_HOST" in env:
            values["host"] = env["LABLINK_HOST"]
        if "LABLINK_PORT" in env:
            values["port"] = int(env["LABLINK_PORT"])
        if "LABLINK_TIMEZONE" in env:
            values["timezone"] = env["LABLINK_TIMEZONE"]
        if env.get("LABLINK_REALTIME", "").lower() in ("1", "true", "yes"):
            values["realtime"] = True
        if env.get("LABLINK_AUTH", "").lower() in ("off", "0", "false", "no"):
            values["auth"] = False
        if "LABLINK_ALLOWED_HOSTS" in env:
            values["allowed_hosts"] = tuple(
                h.strip() for h in env["LABLINK_ALLOWED_HOSTS"].split(",") if h.strip()
            )
        if "LABLINK_AUTH_MAX_FAILURES" in env:
            values["auth_max_failures"] = int(env["LABLINK_AUTH_MAX_FAILURES"])
        if "LABLINK_AUTH_FAILURE_WINDOW" in env:
            values["auth_failure_window"] = float(env["LABLINK_AUTH_FAILURE_WINDOW"])
        if env.get("LABLINK_NATS", "").lower() in ("off", "0", "false", "no"):
            values["nats"] = False
        for name in (
            "nats_url",
            "nats_user",
            "nats_password",
            "nats_credentials",
            "nats_tls_ca",
            "nats_tls_cert",
            "nats_tls_key",
        ):
            if f"LABLINK_{name.upper()}" in env:
                values[name] = env[f"LABLINK_{name.upper()}"]
        if "LABLINK_NATS_REPLICAS" in env:
            values["nats_replicas"] = int(env["LABLINK_NATS_REPLICAS"])
        if env.get("LABLINK_CLUSTER", "").lower() in ("1", "on", "true", "yes"):
            values["cluster"] = True
        if env.get("LABLINK_REPLICA_ID"):
            values["replica_id"] = env["LABLINK_REPLICA_ID"]
        if "LABLINK_LEASE_SECONDS" in env:
            values["lease_seconds"] = float(env["LABLINK_LEASE_SECONDS"])
        for name in ("tls_cert", "tls_key"):
            if env.get(f"LABLINK_{name.upper()}"):
                values[name] = env[f"LABLINK_{name.upper()}"]
        for name in (
            "notify_webhook_url",
            "notify_webhook_secret",
            "notify_email_host",
            "notify_email_user",
            "notify_email_password",
            "notify_email_from",
            "notify_email_to",
            "public_url",
        ):
            if env.get(f"LABLINK_{name.upper()}"):
                values[name] = env[f"LABLINK_{name.upper()}"]
        if "LABLINK_NOTIFY_EMAIL_PORT" in env:
            values["notify_email_port"] = int(env["LABLINK_NOTIFY_EMAIL_PORT"])
        if "LABLINK_EXECUTOR" in env:
            values["executor"] = env["LABLINK_EXECUTOR"]
        if env.get("LABLINK_AGENTS", "").lower() in ("off", "0", "false", "no"):
            values["agents"] = False
        if env.get("LABLINK_AGENT_CONFIG"):
            values["agent_config"] = Path(env["LABLINK_AGENT_CONFIG"])
        if env.get("LABLINK_EMBEDDED_AGENT"):
            values["embedded_agent"] = env["LABLINK_EMBEDDED_AGENT"]
        if env.get("LABLINK_PROJECTOR"):
            values["projector"] = env["LABLINK_PROJECTOR"]
        if "LABLINK_HEARTBEAT_TIMEOUT" in env:
            values["heartbeat_timeout"] = float(env["LABLINK_HEARTBEAT_TIMEOUT"])
        if "LABLINK_RETENTION_DAYS" in env:
            values["retention_days"] = float(env["LABLINK_RETENTION_DAYS"])
        if "LABLINK_DATA_MAX_BYTES" in env:
            values["data_max_bytes"] = int(env["LABLINK_DATA_MAX_BYTES"])
        if "LABLINK_SCHEDULER_FAULT_GRACE" in env:
            values["scheduler_fault_grace"] = float(env["LABLINK_SCHEDULER_FAULT_GRACE"])
        if "LABLINK_FIRE_LEAD" in env:
            values["fire_lead"] = float(env["LABLINK_FIRE_LEAD"])
        if "LABLINK_VIEWS_WAIT" in env:
            values["views_wait"] = float(env["LABLINK_VIEWS_WAIT"])
        if env.get("LABLINK_BACKUP_DIR"):
            values["backup_dir"] = Path(env["LABLINK_BACKUP_DIR"])
        if "LABLINK_BACKUP_KEEP" in env:
            values["backup_keep"] = int(env["LABLINK_BACKUP_KEEP"])
        if "LABLINK_CHECKPOINT_EVENTS" in env:
            values["checkpoint_events"] = int(env["LABLINK_CHECKPOINT_EVENTS"])
        if "LABLINK_CHECKPOINT_MINUTES" in env:
            values["checkpoint_minutes"] = float(env["LABLINK_CHECKPOINT_MINUTES"])
        if env.get("LABLINK_REQUIRE_REASON", "").lower() in ("1", "on", "true", "yes"):
            values["require_reason"] = True
        if env.get("LABLINK_REQUIRE_CALIBRATION", "").lower() in ("1", "on", "true", "yes"):
            values["require_calibration"] = True
        if "LABLINK_CALIBRATION_WARN_DAYS" in env:
            values["calibration_warn_days"] = float(env["LABLINK_CALIBRATION_WARN_DAYS"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        problem = zone_problem(settings.timezone)
        if problem:
            raise ValueError(f"timezone {settings.timezone!r}: {problem}")
        if not settings.executor:
            settings.executor = "agents" if settings.nats else "sim"
        if settings.executor not in ("agents", "sim", "noop"):
            raise ValueError(f"executor {settings.executor!r}: expected 'agents', 'sim' or 'noop'")
        if settings.executor == "agents" and not settings.nats:
            raise ValueError("executor 'agents' needs NATS: LABLINK_NATS=off leaves none")
        if settings.embedded_agent not in EMBEDDED_AGENT_MODES:
            raise ValueError(
                f"LABLINK_EMBEDDED_AGENT {settings.embedded_agent!r}: expected 'inprocess' (the"
                " agent inside `lablink serve`) or 'process' (a `lablink agent` child process)"
            )
        if settings.projector not in PROJECTOR_MODES:
            raise ValueError(
                f"LABLINK_PROJECTOR {settings.projector!r}: expected 'process' (the views folded"
                " by a child process) or 'thread' (by a thread of `lablink serve`)"
            )
        if not 0.1 <= settings.heartbeat_timeout <= 3600:
            raise ValueError(
                f"heartbeat timeout {settings.heartbeat_timeout!r}: expected 0.1 to 3600 s"
            )
        if not 0 <= settings.retention_days <= 36500:
            raise ValueError(
                f"retention days {settings.retention_days!r}: expected 0 (off) to 36500"
            )
        if settings.data_max_bytes < 0:
            raise ValueError(
                f"data max bytes {settings.data_max_bytes!r}: expected 0 (no bound) or more"
            )
        if not 0 <= settings.scheduler_fault_grace <= 86400:
            raise ValueError(
                f"scheduler fault grace {settings.scheduler_fault_grace!r}: expected 0 to 86400 s"
            )
        if not 0 <= settings.fire_lead <= HOLD_LIMIT_SECONDS:
            raise ValueError(
                f"fire lead {settings.fire_lead!r}: expected 0 to {HOLD_LIMIT_SECONDS:g} s"
                " (the longest an agent holds a command sent ahead)"
            )
        if not 0.1 <= settings.views_wait <= 600:
            raise ValueError(f"views wait {settings.views_wait!r}: expected 0.1 to 600 s")
        if not 1 <= settings.backup_keep <= 10_000:
            raise ValueError(f"backup keep {settings.backup_keep!r}: expected 1 to 10000 copies")
        if not 1 <= settings.checkpoint_events <= 10_000_000:
            raise ValueError(
                f"checkpoint events {settings.checkpoint_events!r}: expected 1 to 10000000"
            )
        if not 0.01 <= settings.checkpoint_minutes <= 10_080:
            raise ValueError(
                f"checkpoint minutes {settings.checkpoint_minutes!r}: expected 0.01 to 10080"
            )
        if not 0 <= settings.calibration_warn_days <= 3650:
            raise ValueError(
                f"calibration warn days {settings.calibration_warn_days!r}: expected 0 to 3650"
            )
        if settings.cluster and (not settings.nats or not settings.nats_url):
            raise ValueError(
                "LABLINK_CLUSTER=1 needs LABLINK_NATS_URL: the cluster's servers hold the record"
            )
        if not 1 <= settings.lease_seconds <= 600:
            raise ValueError(
                f"lease seconds {settings.lease_seconds!r}: expected 1 (JetStream's smallest"
                " TTL) to 600 s"
            )
        tls_problem = _tls_problem(settings.tls_cert, settings.tls_key)
        if tls_problem:
            raise ValueError(tls_problem)
        for host in settings.allowed_hosts:
            if host != "*" and ("*" in host.removeprefix("*.") or "/" in host):
                raise ValueError(
                    f"allowed host {host!r}: expected a host name or address, optionally"
                    " with :port, or *.domain for its subdomains"
                )
        if not 1 <= settings.auth_max_failures <= 1_000_000:
            raise ValueError(
                f"auth max failures {settings.auth_max_failures!r}: expected 1 to 1000000"
            )
        if not 1 <= settings.auth_failure_window <= 86400:
            raise ValueError(
                f"auth failure window {settings.auth_failure_window!r}: expected 1 to 86400 s"
            )
        return settings


def _tls_problem(cert: str | None, key: str | None) -> str | None:
    """Why LABLINK_TLS_CERT / LABLINK_TLS_KEY cannot serve HTTPS, or None. Checked at start:
    a server that came up on plain HTTP when HTTPS was meant would send keys in the clear."""
    if bool(cert) != bool(key):
        names = ("LABLINK_TLS_CERT", "LABLINK_TLS_KEY")
        given, missing = names if cert else names[::-1]
        return f"{given} is set but {missing} is not: HTTPS needs both (or neither, for HTTP)"
    for name, path in (("LABLINK_TLS_CERT", cert), ("LABLINK_TLS_KEY", key)):
        if path and not Path(path).is_file():
            return f"{name} {path!r}: no such file"
    return None
