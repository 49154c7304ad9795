"""The errors LabLink raises, as one hierarchy.

Each subclasses the nearest builtin, carries the offending id as a field and builds its own
message, so the API layer can map them to HTTP answers without parsing strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec


class LabLinkError(Exception):
    """Base of every error LabLink raises on purpose."""


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One reason a field of a request was refused."""

    field: str
    value: Any
    reason: str

    def describe(self) -> str:
        return f"{self.field}={self.value!r}: {self.reason}"


class InvalidRequest(LabLinkError, ValueError):
    """A command or request body was refused; nothing was written."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        if not errors:
            raise ValueError("InvalidRequest needs at least one FieldError")
        self.errors = tuple(errors)
        super().__init__("; ".join(e.describe() for e in self.errors))

    @classmethod
    def one(cls, field: str, value: Any, reason: str) -> InvalidRequest:
        return cls([FieldError(field=field, value=value, reason=reason)])


class NotFound(LabLinkError, LookupError):
    kind = "object"

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        super().__init__(f"{self.kind} {object_id!r} not found")


class JobNotFound(NotFound):
    kind = "job"


class ExecutionNotFound(NotFound):
    kind = "execution"


class EquipmentNotFound(NotFound):
    kind = "equipment"


class AlarmNotFound(NotFound):
    kind = "alarm"


class ProfileNotFound(NotFound):
    kind = "profile"


class KeyNotFound(NotFound):
    kind = "key"


class CalibrationNotFound(NotFound):
    """No calibration record with this certificate on this instrument."""

    kind = "calibration"
    field = "certificate"

    def __init__(self, equipment_id: str, certificate: str) -> None:
        self.equipment_id = equipment_id
        self.object_id = certificate
        LookupError.__init__(
            self, f"calibration certificate {certificate!r} not found on {equipment_id!r}"
        )


class Conflict(LabLinkError):
    """The request is well-formed but clashes with the current state."""


class StreamVersionConflict(Conflict):
    """An append named a version of its stream that is no longer current; nothing was written."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, the append expected {expected}"
        )


class JobVersionConflict(Conflict):
    """A client updated a job from a stale copy."""

    def __init__(self, job_id: str, expected: int, actual: int) -> None:
        self.job_id = job_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"job {job_id!r} is at version {actual}, the request names {expected}")


class JobStateConflict(Conflict):
    """The job's state does not allow the command (e.g. editing a deleted job)."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id = job_id
        self.reason = reason
        super().__init__(f"job {job_id!r}: {reason}")


class AlarmStateConflict(Conflict):
    """The alarm's state does not allow the command (acknowledging a cleared alarm)."""

    def __init__(self, alarm_id: str, state: str, reason: str) -> None:
        self.alarm_id = alarm_id
        self.state = state
        self.reason = reason
        super().__init__(f"alarm {alarm_id!r} is {state}: {reason}")


class ExecutionRefused(Conflict):
    """Run-now refused by the job's conflict policy; names the execution(s) in the way."""

    def __init__(self, job_id: str, blocking: tuple[str, ...], reason: str) -> None:
        self.job_id = job_id
        self.blocking = blocking
        self.reason = reason
        super().__init__(f"job {job_id!r}: {reason}")


class DuplicateId(Conflict):
    field = "id"

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        super().__init__(f"{object_id!r} already exists")


class ProfileExists(DuplicateId):
    field = "profile_id"

    def __init__(self, profile_id: str) -> None:
        self.object_id = profile_id
        Conflict.__init__(self, f"profile {profile_id!r} already exists")


class CalibrationExists(DuplicateId):
    """A certificate already on record for the instrument (withdrawn ones included: a
    certificate id is never reused)."""

    field = "certificate"

    def __init__(self, equipment_id: str, certificate: str) -> None:
        self.equipment_id = equipment_id
        self.object_id = certificate
        Conflict.__init__(
            self,
            f"calibration certificate {certificate!r} is already on record for {equipment_id!r}",
        )


class CalibrationStateConflict(Conflict):
    """The instrument's calibration state does not allow the command (releasing an
    instrument that is not quarantined, correcting a withdrawn certificate)."""

    def __init__(self, equipment_id: str, reason: str) -> None:
        self.equipment_id = equipment_id
        self.reason = reason
        super().__init__(f"equipment {equipment_id!r}: {reason}")


class CalibrationBlocked(Conflict):
    """Run-now refused: the job's instrument may not be used (``cause``: calibration_expired,
    calibration_missing, quarantined); ``reason`` says why in words."""

    def __init__(self, job_id: str, equipment_id: str, cause: str, reason: str) -> None:
        self.job_id = job_id
        self.equipment_id = equipment_id
        self.cause = cause
        self.reason = reason
        super().__init__(f"job {job_id!r}: not run: {reason}")


class ProfileVersionConflict(Conflict):
    """A client updated a profile from a stale copy."""

    def __init__(self, profile_id: str, expected: int, actual: int) -> None:
        self.profile_id = profile_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"profile {profile_id!r} is at version {actual}, the request names {expected}"
        )


class KeyAlreadyRevoked(Conflict):
    """A revocation of a key that is already revoked; names when and by whom it was."""

    def __init__(self, key_id: str, revoked_at: str | None, revoked_by: str | None) -> None:
        self.key_id = key_id
        self.revoked_at = revoked_at
        self.revoked_by = revoked_by
        super().__init__(f"key {key_id!r} was already revoked at {revoked_at} by {revoked_by}")


class UnsafeBind(LabLinkError, ValueError):
    """API keys off on an address other machines can reach: anyone there would be admin."""

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(
            f"refusing to serve on {host!r} with LABLINK_AUTH=off: without API keys the API"
            " may listen only on a loopback address (127.0.0.1, ::1, localhost);"
            " turn keys on, or bind to 127.0.0.1"
        )


class StorageError(LabLinkError, OSError):
    """The event log could not be read or written; the operation wrote nothing.

    Raised by the SQLite store in place of sqlite3's own errors (translated at its boundary,
    see ``lablink.eventstore.sqlite``), so callers tell a full disk from a bug. ``path`` is
    the database file, ``cause`` what SQLite said.
    """

    reason = "the event log cannot be used"
    # How long a client should wait before trying again (HTTP Retry-After).
    retry_after = 30

    def __init__(self, path: str, cause: str) -> None:
        self.path = path
        self.cause = cause
        super().__init__(f"{self.reason}: {cause} ({path}); nothing was written")


class StorageFull(StorageError):
    """The disk under the data directory, or the database's page limit, is full."""

    reason = "storage full"


class StorageReadOnly(StorageError):
    """The database file or its directory cannot be written (read-only file or mount)."""

    reason = "storage read-only"
    retry_after = 60


class StorageUnavailable(StorageError):
    """Any other storage failure: an I/O error, a file that cannot be opened, a lock held
    too long by another process."""

    reason = "storage unavailable"


class RecordUnconfirmed(StorageUnavailable):
    """An append went to the JetStream record but its acknowledgement never came (a timeout,
    a lost connection, a leader election): it may or may not be recorded. ``path`` names the
    stream; the events' ids are in ``event_ids`` (a retry with the same ids is refused as a
    duplicate if the first attempt landed)."""

    reason = "append not confirmed"
    retry_after = 5

    def __init__(self, path: str, cause: str, event_ids: Sequence[str] = ()) -> None:
        self.path = path
        self.cause = cause
        self.event_ids = tuple(event_ids)
        OSError.__init__(self, f"{self.reason}: {cause} ({path}); it may have been recorded")


class LocalCopyBehind(StorageUnavailable):
    """The JetStream record holds the events up to ``position``, but the replica's local copy
    of the log did not reach it in time: the write is recorded, this replica cannot show it
    yet (it is not to be sent again)."""

    reason = "local copy behind"
    retry_after = 1

    def __init__(self, path: str, position: int, copied: int, cause: str = "") -> None:
        self.path = path
        self.position = position
        self.copied = copied
        self.cause = cause or f"the local copy is at {copied}, the record at {position}"
        OSError.__init__(
            self, f"{self.reason}: {self.cause} ({path}); the write was recorded, not yet copied"
        )


class LocalCopyMismatch(StorageError):
    """The local copy of the log (``path``) is not a copy of the JetStream record it was
    opened with: it holds events the record does not (another record, or one recreated)."""

    reason = "local copy is of another record"


class LeaseLost(Conflict):
    """An append fenced by the scheduler's lease (``epoch``: the lease message it named) was
    refused: another replica holds the lease now, or it expired. Nothing was written."""

    def __init__(self, replica: str, epoch: int, detail: str = "") -> None:
        self.replica = replica
        self.epoch = epoch
        super().__init__(
            f"replica {replica!r} no longer holds the scheduler lease of epoch {epoch}"
            + (f": {detail}" if detail else "")
        )


class NoSchedulerLeader(LabLinkError):
    """Cluster mode: a command only the scheduler lease's holder runs (run-now), asked of a
    follower, found no replica to run it: nobody serves the forwarding subject (``subject``;
    no replica holds the lease now, a failover), or the holder did not answer within
    ``timeout`` seconds (then it may have run). HTTP 503 with Retry-After."""

    retry_after = 2

    def __init__(self, subject: str, why: str, *, timeout: float | None = None) -> None:
        self.subject = subject
        self.why = why
        self.timeout = timeout
        if timeout is None:
            text = f"no replica holds the scheduler lease now ({why}); nothing was run"
        else:
            text = (
                f"the replica holding the scheduler lease did not answer within {timeout:g} s"
                f" ({why}); the run may have been recorded"
            )
        super().__init__(text)


class StaleEpoch(Conflict):
    """An agent refused a command (``command_id``) sent under a lease epoch lower than the
    highest it has seen: a former scheduler leader still talking."""

    def __init__(self, command_id: str, epoch: int, highest: int) -> None:
        self.command_id = command_id
        self.epoch = epoch
        self.highest = highest
        super().__init__(
            f"command {command_id!r} carries lease epoch {epoch}, below the {highest} seen"
        )


class LocalCopyGap(StorageError):
    """Copying the record into the local copy (``path``) met a gap: the next event copied
    must be at ``expected``, the one offered is at ``position``."""

    reason = "gap in the copied log"

    def __init__(self, path: str, expected: int, position: int) -> None:
        self.expected = expected
        self.position = position
        super().__init__(path, f"expected position {expected}, got {position}")


class AppendTooLarge(LabLinkError, ValueError):
    """One append of more events than the record takes atomically (``limit``); nothing was
    written. ``stream_id`` names the stream."""

    def __init__(self, stream_id: str, count: int, limit: int) -> None:
        self.stream_id = stream_id
        self.count = count
        self.limit = limit
        super().__init__(
            f"stream {stream_id!r}: an append of {count} events is over the {limit} that are"
            " recorded atomically; nothing was written"
        )


class ClusterError(LabLinkError):
    """Moving a log into a cluster's record, or reading the cluster's state, failed."""


class RecordNotEmpty(ClusterError):
    """``lablink cluster import`` refuses a record stream (``stream``) that already holds
    messages: importing would put the log after them, at other positions."""

    def __init__(self, stream: str, messages: int, last_sequence: int) -> None:
        self.stream = stream
        self.messages = messages
        self.last_sequence = last_sequence
        super().__init__(
            f"stream {stream} is not empty: it holds {messages} messages (last sequence"
            f" {last_sequence}); import only into a new stream, or pass --resume to continue"
            " an import that stopped"
        )


class SourceLogGap(ClusterError):
    """The log to import (``path``) has no event at ``expected`` (the next is at
    ``position``): a stream's sequences have no gaps, so its positions could not be kept."""

    def __init__(self, path: str, expected: int, position: int) -> None:
        self.path = path
        self.expected = expected
        self.position = position
        super().__init__(
            f"{path}: no event at position {expected} (the next is at {position}); the"
            " record's sequences have no gaps, so the positions could not be kept"
        )


class ImportDiverged(ClusterError):
    """The record (``stream``) does not hold the log being imported at ``position``: another
    writer, another log, or a stream made for something else."""

    def __init__(self, stream: str, position: int, reason: str) -> None:
        self.stream = stream
        self.position = position
        super().__init__(f"stream {stream} at sequence {position}: {reason}")


class DataDirError(LabLinkError, OSError):
    """The data directory cannot be used; ``path`` names it."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


class DataDirUnusable(DataDirError):
    """Missing and uncreatable, not a directory, or not writable."""

    def __init__(self, path: str, cause: str) -> None:
        self.cause = cause
        super().__init__(path, f"cannot use data directory {path}: {cause}")


class DataDirLocked(DataDirError):
    """Another LabLink process holds the data directory's lock."""

    def __init__(self, path: str, pid: int | None) -> None:
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(path, f"LabLink is already running on {path} ({holder})")


class RecordingFailed(LabLinkError):
    """The scheduler could not write a decision to the log (disk full, database locked, the
    write path stopped); nothing of it was written, and the work is kept to be retried.
    ``stream_id`` names the stream (a job id, ``scheduler``), ``cause`` what went wrong."""

    def __init__(self, stream_id: str, cause: BaseException) -> None:
        self.stream_id = stream_id
        self.cause = cause
        text = str(cause) or type(cause).__name__
        super().__init__(f"could not record to {stream_id!r}: {type(cause).__name__}: {text}")


class BusError(LabLinkError):
    """Trouble on the bus (NATS, JetStream, the private nats-server)."""


class BusCredentialsError(BusError, ValueError):
    """The private bus's credentials file (``path``) cannot be used; ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"bus credentials {path}: {reason}")


class PublishRefused(BusError):
    """JetStream answered the publish of the event at ``position`` with an error."""

    def __init__(self, position: int, code: int | None, description: str) -> None:
        self.position = position
        self.code = code
        self.description = description
        super().__init__(
            f"JetStream refused the event at position {position}: {description} (code {code})"
        )


class AckFailed(BusError, RuntimeError):
    """Acks never came for ``missing`` events of the batch ending at ``position``."""

    def __init__(self, position: int, missing: int) -> None:
        self.position = position
        self.missing = missing
        super().__init__(f"{missing} acks missing for the batch ending at position {position}")


class StreamTailLost(BusError, RuntimeError):
    """``stream`` ends at log ``position`` although it acknowledged up to ``checkpoint``
    (it acknowledges before its disk has a message, see ``bus.connection.ensure_stream``)."""

    def __init__(self, stream: str, position: int, checkpoint: int) -> None:
        self.stream = stream
        self.position = position
        self.checkpoint = checkpoint
        super().__init__(
            f"stream {stream} ends at position {position}, short of the {checkpoint} it"
            " acknowledged: the rest is published again from the log"
        )


class NatsServerExited(BusError):
    """The private nats-server (``pid``) exited by itself with ``returncode``."""

    def __init__(self, pid: int | None, returncode: int | None) -> None:
        self.pid = pid
        self.returncode = returncode
        super().__init__(f"nats-server (pid {pid}) exited with code {returncode}")


class CaptureUploadError(BusError):
    """The capture of ``execution_id`` could not be put in the object store as recorded:
    ``reason`` says why (its file is gone, or changed since its SHA-256 was taken)."""

    def __init__(self, execution_id: str, reason: str) -> None:
        self.execution_id = execution_id
        self.reason = reason
        super().__init__(f"capture of {execution_id}: {reason}")


class DataUnavailable(LabLinkError):
    """An execution's captured data cannot be served (``execution_id``); ``reason`` says why."""

    def __init__(self, execution_id: str, reason: str) -> None:
        self.execution_id = execution_id
        self.reason = reason
        super().__init__(f"execution {execution_id!r}: {reason}")


class DataNotFound(DataUnavailable, LookupError):
    """The execution does not exist, or captured no data."""


class DataPending(DataUnavailable):
    """The capture is still on its agent's disk (``pending_upload``)."""


class DataRemoved(DataUnavailable):
    """Retention or the byte bound removed the capture (``removed_at``, ``removal``)."""

    def __init__(self, execution_id: str, removed_at: str | None, removal: str | None) -> None:
        self.removed_at = removed_at
        self.removal = removal
        why = {
            "retention": "by the retention pass",
            "bound": "by the data byte bound",
            "lost": "as lost: its agent could not upload it (its file went or changed)",
        }
        super().__init__(
            execution_id,
            f"its data was removed at {removed_at} {why.get(removal or '', f'({removal})')}",
        )


class DataRemovalPending(DataRemoved):
    """The view still says ``stored`` but the bucket has no object: retention or the bound
    deleted it and has not recorded the removal yet (or its record failed, a full disk)."""

    def __init__(self, execution_id: str, object_name: str) -> None:
        self.object_name = object_name
        DataUnavailable.__init__(
            self,
            execution_id,
            f"its object {object_name!r} was removed from the data bucket; its record is pending",
        )
        self.removed_at = None
        self.removal = None


class ViewsFileMissing(LabLinkError, FileNotFoundError):
    """The views file (``path``) of the log ``log_path`` is not there (yet): its scheduler
    makes it, rebuilt from the log, when it starts."""

    def __init__(self, path: str, log_path: str) -> None:
        self.path = path
        self.log_path = log_path
        super().__init__(
            f"no views file at {path} for the log {log_path}: the scheduler (lablink serve or"
            " lablink scheduler) rebuilds it from the log at its start; retrying"
        )


class CapturesNeedBucket(LabLinkError):
    """A manual cleanup without the captures' bucket would prune executions whose captured
    data is still stored (``count`` of them, the first ``execution_id``): their objects would
    stay in the bucket unrecorded, outside the byte bound."""

    def __init__(self, execution_id: str, count: int) -> None:
        self.execution_id = execution_id
        self.count = count
        super().__init__(
            f"refusing to prune: {count} execution(s) before the cut-off have captured data"
            f" in the LABLINK_DATA bucket (execution {execution_id!r} first), and no NATS was"
            " given to delete it: pass nats=NatsOptions(...) to SchedulerStorage, or let a"
            " running server's daily retention pass prune them"
        )


class RangeNotSatisfiable(DataUnavailable):
    """A ``Range`` that selects no byte of the capture (``size`` bytes)."""

    def __init__(self, execution_id: str, range_header: str, size: int) -> None:
        self.range_header = range_header
        self.size = size
        super().__init__(
            execution_id, f"range {range_header!r} selects no byte of a {size}-byte capture"
        )


class DataBusUnavailable(BusError):
    """The bus that holds the captures (NATS ``url``) cannot be reached now."""

    def __init__(self, url: str, cause: str) -> None:
        self.url = url
        self.cause = cause
        super().__init__(f"NATS at {url} is unavailable: {cause}")


class ServerRefused(LabLinkError):
    """A LabLink server answered a command-line request with an error (``status``, its
    ``detail``), or could not be reached (``status`` 0)."""

    def __init__(self, url: str, status: int, detail: str) -> None:
        self.url = url
        self.status = status
        self.detail = detail
        answer = f"HTTP {status}: {detail}" if status else detail
        super().__init__(f"{url}: {answer}")


class NotifyConfigError(LabLinkError, ValueError):
    """A notification channel's configuration (notifications.toml, or LABLINK_NOTIFY_*) is
    refused: ``where`` names the file or variable, ``key`` the setting."""

    def __init__(self, where: str, key: str, value: Any, reason: str) -> None:
        self.where = where
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"{where}: {key} = {value!r}: {reason}")


class DeliveryFailed(LabLinkError):
    """A notification was not delivered: ``channel`` names it, ``reason`` what went wrong
    (a status, a timeout, an SMTP answer); the outbox tries again."""

    def __init__(self, channel: str, reason: str) -> None:
        self.channel = channel
        self.reason = reason
        super().__init__(f"channel {channel!r}: {reason}")


class BackupError(LabLinkError):
    """A backup, restore or verify that cannot go ahead (lablink/backup)."""


class BackupExists(BackupError, FileExistsError):
    """`lablink backup` does not overwrite a file without --force."""

    def __init__(self, file: str) -> None:
        self.file = file
        super().__init__(f"{file}: the file exists; give --force to replace it")


class ChecksumMismatch(BackupError, ValueError):
    """A backup whose SHA-256 is not the one written beside it: damaged or altered."""

    def __init__(self, file: str, expected: str, actual: str) -> None:
        self.file = file
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{file}: SHA-256 is {actual}, but {file}.sha256 says {expected}: the copy is"
            " damaged or not the one the checksum was written for"
        )


class NotALog(BackupError, ValueError):
    """A file given as a backup that is not a readable LabLink event log."""

    def __init__(self, file: str, reason: str) -> None:
        self.file = file
        self.reason = reason
        super().__init__(f"{file}: not a usable LabLink event log: {reason}")


class RestoreTargetNotEmpty(BackupError, FileExistsError):
    """A restore goes into an empty (or missing) data directory only: never over a log."""

    def __init__(self, directory: str, entries: Sequence[str]) -> None:
        self.directory = directory
        self.entries = list(entries)
        shown = ", ".join(self.entries[:5]) + (", …" if len(self.entries) > 5 else "")
        super().__init__(
            f"{directory}: not empty ({len(self.entries)} entries: {shown}); restore into an"
            " empty or new directory"
        )


class VerifyFailed(BackupError):
    """`lablink verify` found a discrepancy: ``subject`` says where (a log position, a
    stream, a view's table and key), ``detail`` what."""

    def __init__(self, subject: str, detail: str) -> None:
        self.subject = subject
        self.detail = detail
        super().__init__(f"{subject}: {detail}")


class AuditError(LabLinkError):
    """The audit record (the hash chain, the signed checkpoints, the signing key)."""


class CheckpointInvalid(AuditError, ValueError):
    """A signed checkpoint or a verifier key that does not hold: ``subject`` names the part
    (checkpoint, signature, public key), ``detail`` what is wrong with it."""

    def __init__(self, subject: str, detail: str) -> None:
        self.subject = subject
        self.detail = detail
        super().__init__(f"{subject}: {detail}")


class SigningKeyMissing(AuditError, FileNotFoundError):
    """The data directory has no checkpoint signing key yet (the first start makes it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"no checkpoint signing key at {path}: `lablink serve` makes it on its first start"
        )


class AuditFailed(AuditError):
    """`lablink audit verify` found the record unsound: the first bad ``position`` (None when
    no position is to blame, e.g. a checkpoint beyond the log's end names its size), the
    ``kind`` (altered, gap, truncated, rewritten, bad signature) and what is wrong."""

    def __init__(self, position: int | None, kind: str, detail: str) -> None:
        self.position = position
        self.kind = kind
        self.detail = detail
        where = f"position {position}" if position is not None else "log"
        super().__init__(f"{where}: {kind}: {detail}")
