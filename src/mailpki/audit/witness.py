"""Checkpoints that leave the database, and the check of a log against a witness's copy.

Whoever can write the database can delete checkpoint rows, cut the log and reset its
head. A *witness* keeps a copy of every checkpoint somewhere that person cannot rewrite
(the Key Recovery Service, an append-only file, the auditors' mailboxes). The log is then
checked against each copy: every checkpoint a witness holds must still be in the
database, sealing the very record it sealed; the log may not end before the newest
witnessed checkpoint.

A checkpoint travels as one line of JSON (``to_line``), the same in the witness file, in
the mail to auditors and in an exported bundle::

    {"format":"mailpki-checkpoint/1","instance":"<key id>","seq":200,"hash":"…",
     "time":"…","ecdsa":"<base64 DER>","mldsa":"<base64>"}
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailpki.audit.keys import AuditKeys, signature_problem
from mailpki.audit.log import HEAD_ID, checkpoint_payload
from mailpki.audit.verify import Problem, VerifyReport
from mailpki.errors import AuditError
from mailpki.store.models import AuditCheckpoint, AuditHead, AuditRecord

__all__ = [
    "LINE_FORMAT",
    "SignedCheckpoint",
    "WitnessCopy",
    "check_copy",
    "never_sealed",
    "parse_lines",
    "witness_text",
]

LINE_FORMAT = "mailpki-checkpoint/1"
MAX_LINE = 64 * 1024
MAX_WITNESS_BYTES = 1024 * 1024 * 1024
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_HEADER_RE = re.compile(rb"[A-Za-z][A-Za-z0-9-]{0,76}:[ \t]")
_CHUNK = 500


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_LINE:
        raise AuditError(f"checkpoint field {name!r} must be base64 text")
    try:
        decoded = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise AuditError(f"checkpoint field {name!r} is not valid base64") from None
    if not decoded:
        raise AuditError(f"checkpoint field {name!r} is empty")
    return decoded


@dataclass(frozen=True)
class SignedCheckpoint:
    """(seq, hash, time) of one record and the audit key's signatures over them."""

    seq: int
    hash: str
    time: str
    signature: bytes
    pq_signature: bytes | None = None

    @classmethod
    def of(cls, row: AuditCheckpoint) -> SignedCheckpoint:
        return cls(int(row.seq), row.hash, row.time, bytes(row.signature), _opt(row.pq_signature))

    @property
    def payload(self) -> bytes:
        """Exactly the bytes both signatures cover."""
        return checkpoint_payload(self.seq, self.hash, self.time)

    def to_json(self, instance_id: str) -> dict[str, Any]:
        return {
            "format": LINE_FORMAT,
            "instance": instance_id,
            "seq": self.seq,
            "hash": self.hash,
            "time": self.time,
            "ecdsa": base64.b64encode(self.signature).decode(),
            "mldsa": None
            if self.pq_signature is None
            else base64.b64encode(self.pq_signature).decode(),
        }

    def to_line(self, instance_id: str) -> str:
        return json.dumps(self.to_json(instance_id), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: Any) -> tuple[str, SignedCheckpoint]:
        """(instance id, checkpoint) from a decoded line; AuditError names what is wrong."""
        if not isinstance(raw, dict):
            raise AuditError("a checkpoint must be a JSON object")
        if raw.get("format") != LINE_FORMAT:
            raise AuditError(f"not a {LINE_FORMAT} line")
        instance, seq, hash_, time = (raw.get(k) for k in ("instance", "seq", "hash", "time"))
        if not isinstance(instance, str) or not _HASH_RE.fullmatch(instance):
            raise AuditError("checkpoint 'instance' must be 64 hex digits")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq < 2**63:
            raise AuditError("checkpoint 'seq' must be a positive whole number")
        if not isinstance(hash_, str) or not _HASH_RE.fullmatch(hash_):
            raise AuditError("checkpoint 'hash' must be 64 lowercase hex digits")
        if not isinstance(time, str) or not 0 < len(time) <= 40:
            raise AuditError("checkpoint 'time' must be an ISO 8601 time")
        pq = raw.get("mldsa")
        return instance, cls(
            seq,
            hash_,
            time,
            _b64(raw.get("ecdsa"), "ecdsa"),
            None if pq is None else _b64(pq, "mldsa"),
        )


def _opt(value: bytes | None) -> bytes | None:
    return None if not value else bytes(value)


def parse_lines(text: str, *, instance_id: str | None = None) -> list[SignedCheckpoint]:
    """Checkpoint lines of a witness file or a saved mail (other lines are skipped).

    A line that claims the checkpoint format but is malformed raises AuditError with its
    line number; lines of other instances are skipped when ``instance_id`` is given.
    """
    found: list[SignedCheckpoint] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line.startswith("{") or LINE_FORMAT not in line:
            continue
        if len(line) > MAX_LINE:
            raise AuditError(f"line {number}: the checkpoint line is too long")
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError):
            raise AuditError(f"line {number}: a checkpoint line is not valid JSON") from None
        try:
            instance, checkpoint = SignedCheckpoint.from_json(raw)
        except AuditError as exc:
            raise AuditError(f"line {number}: {exc}") from None
        if instance_id is None or instance == instance_id:
            found.append(checkpoint)
    return found


def witness_text(data: bytes) -> str:
    """The text in which to look for checkpoint lines: a saved mail is decoded (its text
    parts, quoted-printable or base64 as sent), anything else read as UTF-8.

    Mail transports wrap a long checkpoint line (quoted-printable soft breaks); reading
    the raw ``.eml`` would miss it. Undecodable bytes become U+FFFD, never an exception.
    """
    if len(data) > MAX_WITNESS_BYTES:
        raise AuditError(f"the witness copy is larger than {MAX_WITNESS_BYTES} bytes")
    if not _HEADER_RE.match(data):
        return data.decode("utf-8", errors="replace")
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    texts: list[str] = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            texts.append(payload.decode(charset, errors="replace"))
        except LookupError:  # an unknown charset name
            texts.append(payload.decode("utf-8", errors="replace"))
    return "\n".join(texts)


@dataclass(frozen=True)
class WitnessCopy:
    """What one witness holds, and how far it can be trusted."""

    name: str
    location: str
    independent: bool
    why: str  # one sentence: why it is (or is not) out of the administrator's reach
    checkpoints: tuple[SignedCheckpoint, ...]

    @property
    def last_seq(self) -> int:
        return max((c.seq for c in self.checkpoints), default=0)


def _chunks(values: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def check_copy(
    session: Session, keys: AuditKeys, copy: WitnessCopy, *, pq_from: int | None = None
) -> list[Problem]:
    """Everything the log lost or changed since ``copy``'s witness saw it (read-only)."""
    problems: list[Problem] = []
    who = f"witness {copy.name} ({copy.location})"
    by_seq: dict[int, SignedCheckpoint] = {}
    for checkpoint in copy.checkpoints:
        why = signature_problem(
            keys, checkpoint.seq, checkpoint.hash, checkpoint.time, checkpoint.signature,
            checkpoint.pq_signature, pq_required=pq_from is not None and checkpoint.seq >= pq_from,
        )  # fmt: skip
        if why is not None:
            problems.append(
                Problem(
                    checkpoint.seq,
                    "bad-witness",
                    f"{who} holds a checkpoint at record {checkpoint.seq} that does not hold: "
                    f"{why}",
                )
            )
            continue
        by_seq[checkpoint.seq] = checkpoint
    if not by_seq:
        return problems
    seqs = sorted(by_seq)
    last = seqs[-1]
    records: dict[int, str] = {}
    sealed: dict[int, str] = {}
    for chunk in _chunks(seqs):
        # (a Result has .keys(): dict.update would take it for a mapping)
        for seq, hash_ in session.execute(
            select(AuditRecord.seq, AuditRecord.hash).where(AuditRecord.seq.in_(chunk))
        ):
            records[int(seq)] = hash_
        for seq, hash_ in session.execute(
            select(AuditCheckpoint.seq, AuditCheckpoint.hash).where(AuditCheckpoint.seq.in_(chunk))
        ):
            sealed[int(seq)] = hash_
    newest = int(session.scalar(select(func.max(AuditRecord.seq))) or 0)
    head = session.scalar(select(AuditHead.seq).where(AuditHead.id == HEAD_ID))
    if newest < last:
        problems.append(
            Problem(
                newest + 1,
                "truncated",
                f"the log ends at record {newest}, but {who} saw it sealed up to record {last}: "
                f"records {newest + 1}..{last} at least are gone (cut, or the database was rolled "
                "back to an older copy)",
            )
        )
    if head is not None and head < last:
        problems.append(
            Problem(
                None,
                "rolled-back",
                f"the audit head says record {head}, but {who} saw record {last} sealed: the "
                "head was reset or the database rolled back",
            )
        )
    gone = [s for s in seqs if s not in records and s <= newest]
    changed = [s for s in seqs if s in records and records[s] != by_seq[s].hash]
    unsealed = [s for s in seqs if s not in sealed]
    for seq in gone:
        problems.append(
            Problem(seq, "deleted", f"record {seq}, which {who} saw sealed, is gone from the log")
        )
    for seq in changed:
        problems.append(
            Problem(
                seq,
                "witness-mismatch",
                f"record {seq} is not the record {who} saw sealed: the log was rewritten, forked "
                "or rolled back from there",
            )
        )
    if unsealed:
        shown = ", ".join(str(s) for s in unsealed[:10]) + (" …" if len(unsealed) > 10 else "")
        problems.append(
            Problem(
                unsealed[0],
                "missing-checkpoint",
                f"{len(unsealed)} checkpoint(s) that {who} holds are missing from the "
                f"database (records {shown})",
            )
        )
    return problems


def never_sealed(report: VerifyReport) -> Problem | None:
    """A log with records and not one checkpoint: every instance seals its log when it is
    made and after every command, so its checkpoints were deleted (all of them)."""
    if report.records and not report.checkpoints:
        return Problem(
            None,
            "missing-checkpoint",
            f"the log has {report.records} records and no checkpoint at all: an instance "
            "seals its log when it is made and after every command, so the checkpoints "
            "were deleted",
        )
    return None
