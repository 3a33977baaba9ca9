"""Handing the instance's audit checkpoints to its witnesses, and reading their copies.

Three witnesses, each configured apart:
- the Key Recovery Service (`recovery.url`, or the embedded one under `recovery.home`):
  it checks that each checkpoint extends the last it holds, countersigns and keeps it;
- `audit.witness_file`: a file outside the home folder, one checkpoint line appended per
  checkpoint by the instance itself (make it append-only, `chattr +a`, so the instance can
  add lines but not rewrite them);
- `audit.witness_mail`: the auditors get the newest checkpoint line once a day.

Checkpoints leave the instance on their own: every command that seals the log
(`Instance.seal`) hands them over after it (`hand_over_quietly`, registered by the CLI),
the server's housekeeping does it every cycle (its "witness" chore), and `mailpki audit
seal` does it on demand (`seal_and_witness`, which reports each witness's answer).
The automatic hand-over is best effort: a witness that is down or refuses never breaks
the command; it keeps its place and the next hand-over sends everything it missed;
meanwhile `mailpki audit verify` says the witness is behind. How independent each witness
is, is said by `file_independence` and `krs_independence`.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from mailpki.audit.keys import AuditKeys
from mailpki.audit.witness import SignedCheckpoint, WitnessCopy, parse_lines
from mailpki.errors import AuditError, MailPKIError
from mailpki.instance.instance import Instance
from mailpki.notify.mail import queue
from mailpki.recovery.client import HttpRecoveryClient, RecoveryClient
from mailpki.recovery.witness import countersign_payload, submission
from mailpki.store.models import AuditCheckpoint, AuditRecord, OutboxMessage

__all__ = [
    "HandOver",
    "file_independence",
    "hand_over",
    "hand_over_quietly",
    "krs_copy_rows",
    "krs_independence",
    "newest_checkpoint_seq",
    "seal_and_witness",
    "witness_copies",
]

log = logging.getLogger(__name__)

MAIL_KIND = "audit.checkpoint"
MAIL_EVERY = timedelta(hours=23)
_FS_IOC_GETFLAGS = 0x80086601
_FS_APPEND_FL = 0x20
_FS_IMMUTABLE_FL = 0x10
_COPY_PAGES = 100_000
_TAIL_BLOCK = 64 * 1024
QUIET_TIMEOUT = 10.0  # seconds per exchange: a witness that is down must not stall a command


@dataclass(frozen=True)
class HandOver:
    """What one witness got in one hand-over (``error`` set if it failed or refused)."""

    witness: str
    handed: int
    last_seq: int
    error: str | None = None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _append_only(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            raw = fcntl.ioctl(handle.fileno(), _FS_IOC_GETFLAGS, struct.pack("l", 0))
    except OSError:
        return False
    flags = int(struct.unpack("l", raw)[0])
    return bool(flags & (_FS_APPEND_FL | _FS_IMMUTABLE_FL))


def file_independence(path: Path, home: Path) -> tuple[bool, str]:
    """(independent?, why) for a witness file."""
    if _inside(path, home):
        return False, "it lies inside the home folder: whoever holds the home can rewrite it"
    if _append_only(path):
        return True, "append-only (chattr +a): the instance can add lines but not rewrite them"
    if path.exists() and not os.access(path, os.W_OK):
        return True, (
            "the instance's user cannot rewrite it, but cannot add checkpoints to it either: "
            "make it writable and append-only (chattr +a)"
        )
    return False, (
        "the instance's user can rewrite it: make it append-only (chattr +a) or owned by "
        "another user"
    )


def krs_independence(instance: Instance) -> tuple[bool, str, str]:
    """(independent?, why, location) for the Key Recovery Service as a witness."""
    url = str(instance.config.get("recovery.url"))
    if url:
        return True, "a recovery service that runs apart, reached over HTTP", url
    krs_home = instance.config.path_of("recovery.home")
    if _inside(krs_home, instance.home):
        return (
            False,
            "the embedded recovery service under the home folder: whoever holds the home can "
            "rewrite it (run the recovery service apart in production)",
            str(krs_home),
        )
    if not os.access(krs_home, os.W_OK):
        return True, "a recovery service home the instance's user cannot write", str(krs_home)
    return False, "a recovery service home the instance's user can write", str(krs_home)


def _checkpoints_after(instance: Instance, after: int) -> list[SignedCheckpoint]:
    with instance.db.session() as session:
        rows = session.scalars(
            select(AuditCheckpoint).where(AuditCheckpoint.seq > after).order_by(AuditCheckpoint.seq)
        ).all()
        return [SignedCheckpoint.of(r) for r in rows]


def _newest_checkpoint(instance: Instance) -> SignedCheckpoint | None:
    with instance.db.session() as session:
        row = session.scalar(select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1))
        return None if row is None else SignedCheckpoint.of(row)


def newest_checkpoint_seq(instance: Instance) -> int | None:
    """The record the newest checkpoint seals (None before the first; errors: None)."""
    try:
        with instance.db.session() as session:
            return session.scalar(select(func.max(AuditCheckpoint.seq)))
    except (MailPKIError, SQLAlchemyError):
        return None


def _links(instance: Instance, after: int, upto: int) -> list[dict[str, Any]]:
    with instance.db.session() as session:
        rows = session.execute(
            select(
                AuditRecord.seq, AuditRecord.time, AuditRecord.event, AuditRecord.actor,
                AuditRecord.data, AuditRecord.prev_hash, AuditRecord.hash,
            )
            .where(AuditRecord.seq > after, AuditRecord.seq <= upto)
            .order_by(AuditRecord.seq)
        ).all()  # fmt: skip
    fields = ("seq", "time", "event", "actor", "data", "prev_hash", "hash")
    return [dict(zip(fields, row, strict=True)) for row in rows]


def _krs_copy(
    client: RecoveryClient, keys: AuditKeys
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The service's answer header and every checkpoint it holds for this instance."""
    after, found = 0, []
    header: dict[str, Any] = {}
    for _ in range(_COPY_PAGES):
        header = client.witnessed(keys.instance_id, after)
        page = header.get("checkpoints") or []
        if not isinstance(page, list):
            raise AuditError("the recovery service's witness copy is malformed")
        found.extend(page)
        if not header.get("more") or not page:
            break
        after = int(page[-1]["seq"])
    return header, found


def _hand_to_krs(instance: Instance, keys: AuditKeys, timeout: float | None) -> HandOver:
    name = "recovery service"
    try:
        client: RecoveryClient = instance.recovery_client
        if timeout is not None and not client.is_local:
            client = HttpRecoveryClient(str(instance.config.get("recovery.url")), timeout=timeout)
        held = int(client.witnessed(keys.instance_id, 2**62).get("last_seq") or 0)
        rows = _checkpoints_after(instance, max(held - 1, 0))
        mine = [c for c in rows if c.seq == held]
        pending = [c for c in rows if c.seq > held]
        theirs = client.witnessed(keys.instance_id, held - 1).get("checkpoints") if held else []
        if held and (not mine or not theirs or mine[0].hash != theirs[0]["hash"]):
            return HandOver(
                name, 0, held,
                f"the witness holds checkpoint {held}, which this log no longer has: the "
                "database was cut or rolled back; run 'mailpki audit verify'",
            )  # fmt: skip
        if held == 0 and pending:
            pending = pending[-1:]  # a new chain starts at the newest checkpoint
        handed = 0
        for checkpoint in pending:
            links = [] if held == 0 else _links(instance, held, checkpoint.seq)
            client.witness(submission(keys, checkpoint, links))
            held, handed = checkpoint.seq, handed + 1
    except MailPKIError as exc:
        return HandOver(name, 0, 0, str(exc))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return HandOver(name, 0, 0, "the recovery service's answer about its copy is malformed")
    return HandOver(name, handed, held)


def _last_seq_in_file(handle: Any, instance_id: str) -> int:
    """The seq of the last line of ``instance_id`` in an open witness file, read from its
    end backwards (the file only grows: reading it whole at every seal would not scale)."""
    end = handle.seek(0, os.SEEK_END)
    tail = b""
    position = end
    while position > 0:
        step = min(_TAIL_BLOCK, position)
        position -= step
        handle.seek(position)
        tail = handle.read(step) + tail
        lines = tail.split(b"\n")
        complete = lines if position == 0 else lines[1:]  # the first may be cut
        for raw in reversed(complete):
            text = raw.decode("utf-8", errors="replace")
            if instance_id not in text:
                continue
            found = parse_lines(text, instance_id=instance_id)
            if found:
                return found[-1].seq
        tail = lines[0] if position > 0 else b""
    return 0


def _hand_to_file(instance: Instance, keys: AuditKeys, path: Path) -> HandOver:
    name = f"file {path}"
    pending: list[SignedCheckpoint] = []
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        with os.fdopen(fd, "r+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # two commands sealing at once
            held = _last_seq_in_file(handle, keys.instance_id)
            pending = _checkpoints_after(instance, held)
            if pending:
                lines = "".join(c.to_line(keys.instance_id) + "\n" for c in pending)
                handle.write(lines.encode())
                handle.flush()
                os.fsync(handle.fileno())
                held = pending[-1].seq
    except OSError as exc:
        return HandOver(name, 0, 0, f"cannot append to {path}: {exc.strerror or exc}")
    except MailPKIError as exc:
        return HandOver(name, 0, 0, str(exc))
    return HandOver(name, len(pending), held)


def _mail_daily(instance: Instance, keys: AuditKeys, now: datetime) -> HandOver | None:
    recipients = [a for a in str(instance.config.get("audit.witness_mail")).split(",") if a]
    if not recipients:
        return None
    checkpoint = _newest_checkpoint(instance)
    if checkpoint is None:
        return HandOver("mail", 0, 0)  # nothing sealed yet: nothing to mail
    with instance.db.transaction() as session:
        last = session.scalar(
            select(OutboxMessage.created_at)
            .where(OutboxMessage.kind == MAIL_KIND)
            .order_by(OutboxMessage.created_at.desc())
            .limit(1)
        )
        if last is not None and now - last < MAIL_EVERY:
            return HandOver("mail", 0, checkpoint.seq)
        for address in recipients:
            queue(
                session,
                kind=MAIL_KIND,
                to=address,
                subject=f"[{instance.config.get('instance.org')}] audit checkpoint {checkpoint.seq}",
                body=_mail_body(instance, keys, checkpoint),
                now=now,
            )
    from mailpki.instance.enrollments import flush_mail

    flush_mail(instance)
    return HandOver("mail", len(recipients), checkpoint.seq)


def _mail_body(instance: Instance, keys: AuditKeys, checkpoint: SignedCheckpoint) -> str:
    return (
        f"The audit log of the mailpki instance of {instance.config.get('instance.org')} was "
        f"sealed at record {checkpoint.seq} ({checkpoint.time}).\n\n"
        "Keep this mail: it is a witness. To check the instance against it, save this mail\n"
        "and run on an exported bundle:\n\n"
        "    mailpki audit verify --bundle BUNDLE --witness THIS-MAIL.eml\n\n"
        "The checkpoint (one line; signatures in base64):\n\n"
        f"{checkpoint.to_line(keys.instance_id)}\n"
    )


def hand_over(
    instance: Instance, *, now: datetime | None = None, timeout: float | None = None
) -> list[HandOver]:
    """Hand every checkpoint a witness lacks to every configured witness (no new seal);
    ``timeout`` bounds each exchange with a recovery service run apart."""
    keys = instance.audit_keys()
    results = [_hand_to_krs(instance, keys, timeout)]
    file = str(instance.config.get("audit.witness_file"))
    if file:
        results.append(_hand_to_file(instance, keys, instance.config.path_of("audit.witness_file")))
    mailed = _mail_daily(instance, keys, now or datetime.now(UTC))
    if mailed is not None:
        results.append(mailed)
    return results


def seal_and_witness(instance: Instance, *, now: datetime | None = None) -> list[HandOver]:
    """Seal the log's head, then hand every checkpoint to every configured witness."""
    with instance.db.transaction() as session:
        instance.audit.checkpoint(session)
    return hand_over(instance, now=now)


def hand_over_quietly(instance: Instance) -> list[HandOver]:
    """`hand_over`, best effort: never raises; returns (and logs) what did not get through.

    Runs after every seal of a command and in the server's housekeeping: a witness that
    is down must not break issuance. What it missed goes with the next hand-over."""
    try:
        results = hand_over(instance, timeout=QUIET_TIMEOUT)
    except (MailPKIError, SQLAlchemyError, OSError, ValueError, KeyError, TypeError) as exc:
        results = [HandOver("witnesses", 0, 0, f"{type(exc).__name__}: {exc}")]
    failed = [r for r in results if r.error]
    for result in failed:
        log.warning(
            "audit witness %s did not take the checkpoints: %s", result.witness, result.error
        )
    return failed


def krs_copy_rows(instance: Instance, keys: AuditKeys) -> list[dict[str, Any]]:
    """The recovery service's countersigned copy, checked, as it sent it."""
    header, rows = _krs_copy(instance.recovery_client, keys)
    _check_countersignatures(header, rows, keys)
    return rows


def witness_copies(instance: Instance, keys: AuditKeys) -> tuple[list[WitnessCopy], list[str]]:
    """What each readable witness holds, and the witnesses that could not be read."""
    copies: list[WitnessCopy] = []
    unreadable: list[str] = []
    independent, why, location = krs_independence(instance)
    try:
        header, rows = _krs_copy(instance.recovery_client, keys)
        checkpoints = tuple(SignedCheckpoint.from_json(r)[1] for r in rows)
        _check_countersignatures(header, rows, keys)
        copies.append(WitnessCopy("recovery service", location, independent, why, checkpoints))
    except (MailPKIError, KeyError, TypeError, ValueError) as exc:
        unreadable.append(f"recovery service ({location}): {exc}")
    file = str(instance.config.get("audit.witness_file"))
    if file:
        path = instance.config.path_of("audit.witness_file")
        independent, why = file_independence(path, instance.home)
        try:
            found = parse_lines(path.read_text(), instance_id=keys.instance_id)
            copies.append(WitnessCopy("file", str(path), independent, why, tuple(found)))
        except (OSError, UnicodeDecodeError, MailPKIError) as exc:
            unreadable.append(f"file {path}: {exc}")
    return copies, unreadable


def _check_countersignatures(
    header: dict[str, Any], rows: list[dict[str, Any]], keys: AuditKeys
) -> None:
    """Each kept checkpoint carries the service's countersignature (AuditError if not)."""
    if not rows:
        return
    key = AuditKeys.from_pem(str(header["countersign_key"]).encode())
    witness = str(header["witness"])
    for row in rows:
        _, checkpoint = SignedCheckpoint.from_json(row)
        payload = countersign_payload(
            witness, keys.instance_id, checkpoint, str(row["received_at"])
        )
        signature = base64.b64decode(str(row["countersignature"]))
        if not key.verify_classic(payload, signature):
            raise AuditError(
                f"the witness copy's countersignature on checkpoint {checkpoint.seq} does not verify"
            )
