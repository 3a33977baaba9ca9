"""The append-only, hash-chained, signed audit log: writing side.

Every record links to the one before it: ``hash = SHA-256(canonical(prev_hash, seq,
time, event, actor, data))``. Every ``checkpoint_every`` records the audit key signs
(seq, hash, time) of the newest record, which seals everything up to it: without
the key, nobody can rewrite the sealed part and recompute the chain unnoticed. With a
post-quantum key the same payload is also signed with ML-DSA-65. Checkpoints leave
the database through witnesses (``mailpki.audit.witness``).

Appends run inside the caller's transaction, so an action and its audit record
commit or roll back together.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, padding, rsa
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mailpki.errors import AuditError, AuditIntegrityError, AuditUnavailable
from mailpki.store.models import AuditCheckpoint, AuditHead, AuditRecord
from mailpki.store.outage import is_outage

__all__ = [
    "ZERO_HASH",
    "AuditLog",
    "canonical",
    "checkpoint_payload",
    "genesis",
    "record_hash",
]

ZERO_HASH = "0" * 64
HEAD_ID = 1

_EVENT_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_EVENT_MAX = 64  # AuditRecord.event is String(64)
_ACTOR_MAX = 320  # AuditRecord.actor is String(320)
_MAX_DEPTH = 32

# Whole words of a key (after splitting snake_case / camelCase / kebab-case) that
# mark a secret. Words, not substrings: "pin" must not refuse "shipping".
_SECRET_WORDS = frozenset(
    {
        "password", "passwords", "passwd", "passphrase", "passphrases",
        "pin", "pins", "secret", "secrets", "privkey",
    }
)  # fmt: skip
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")

AuditSigner = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def canonical(obj: Any) -> bytes:
    """The one byte encoding that is hashed and signed (NaN/Infinity refused)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def record_hash(prev_hash: str, seq: int, time: str, event: str, actor: str, data: Any) -> str:
    """Hex SHA-256 of one chain link; ``data`` is the decoded JSON value."""
    link = {
        "prev_hash": prev_hash,
        "seq": seq,
        "time": time,
        "event": event,
        "actor": actor,
        "data": data,
    }
    return hashlib.sha256(canonical(link)).hexdigest()


def checkpoint_payload(seq: int, hash_: str, time: str) -> bytes:
    """The bytes the audit key signs for a checkpoint."""
    return canonical({"seq": seq, "hash": hash_, "time": time})


def genesis(session: Session) -> None:
    """Create the head row (seq 0, hash of zeros) if it is missing; the caller commits."""
    if session.get(AuditHead, HEAD_ID) is not None:
        return
    # A missing head over existing records means someone deleted it: starting a new
    # chain would hide that, so refuse.
    if session.scalar(select(func.count()).select_from(AuditRecord)):
        raise AuditIntegrityError(
            "the audit head row is missing but audit records exist: the log was tampered "
            "with; run the audit verifier before doing anything else"
        )
    session.add(AuditHead(id=HEAD_ID, seq=0, hash=ZERO_HASH))
    try:
        session.flush()
    except SQLAlchemyError as exc:
        raise AuditError(f"could not create the audit log head: {exc}") from exc


def _key_words(key: str) -> list[str]:
    spaced = _CAMEL_RE.sub("_", key).lower()
    return [w for w in _NON_ALNUM_RE.split(spaced) if w]


def _looks_secret(key: str) -> bool:
    words = _key_words(key)
    if any(w in _SECRET_WORDS for w in words):
        return True
    joined = "_".join(words)
    return "private_key" in joined or "privatekey" in joined


def _check_value(value: Any, path: str, depth: int) -> None:
    """Refuse anything that is not plain JSON, and any key that looks like a secret.

    Datetimes, bytes and other objects are refused rather than converted: the caller
    chooses the representation (``.isoformat()``, ``.hex()``) so the record says
    exactly what they meant.
    """
    if depth > _MAX_DEPTH:
        raise AuditError(f"audit data is nested deeper than {_MAX_DEPTH} levels at {path!r}")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise AuditError(f"audit data {path!r} is not a finite number")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditError(f"audit data keys must be strings; {path!r} has {key!r}")
            where = f"{path}.{key}" if path else key
            if _looks_secret(key):
                raise AuditError(
                    f"audit data key {where!r} looks like a secret; secrets are never "
                    "logged: leave it out"
                )
            _check_value(item, where, depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1)
        return
    kind = type(value).__name__
    raise AuditError(
        f"audit data {path!r} is a {kind}, which JSON cannot hold: convert it first "
        "(datetime: .isoformat(), bytes: .hex())"
    )


def _encode_data(data: Mapping[str, Any]) -> str:
    if not isinstance(data, Mapping):
        raise AuditError(f"audit data must be a mapping, not {type(data).__name__}")
    _check_value(data, "", 0)
    try:
        return canonical(data).decode()
    except ValueError as exc:  # e.g. a lone surrogate cannot be stored as UTF-8
        raise AuditError(f"audit data cannot be encoded as UTF-8 JSON: {exc}") from exc


def _check_event(event: str) -> None:
    if not isinstance(event, str) or not _EVENT_RE.fullmatch(event):
        raise AuditError(
            f"audit event name {event!r} is invalid: use dotted lower-case words in the "
            "past tense, e.g. 'cert.issued'"
        )
    if len(event) > _EVENT_MAX:
        raise AuditError(f"audit event name {event!r} is longer than {_EVENT_MAX} characters")


def _check_actor(actor: str) -> None:
    if not isinstance(actor, str) or not actor.strip():
        raise AuditError("audit actor must be a non-empty string naming who acted")
    if len(actor) > _ACTOR_MAX:
        raise AuditError(f"audit actor is longer than {_ACTOR_MAX} characters")
    try:
        actor.encode()
    except UnicodeEncodeError as exc:
        raise AuditError("audit actor is not valid Unicode text") from exc


def _lock_head(session: Session) -> AuditHead:
    # FOR UPDATE serialises appenders on PostgreSQL; populate_existing makes sure a
    # head object cached in this session is refreshed with the locked row's values.
    head = session.execute(
        select(AuditHead)
        .where(AuditHead.id == HEAD_ID)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if head is None:
        raise AuditError(
            "the audit log is not initialised (no head row): call audit.genesis() when "
            "the instance is created"
        )
    return head


class AuditLog:
    """Appends records to the chain and seals it with the audit key."""

    def __init__(
        self,
        *,
        signer: AuditSigner | None,
        pq_signer: mldsa.MLDSA65PrivateKey | None = None,
        checkpoint_every: int = 100,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if signer is not None and not isinstance(
            signer, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        ):
            raise AuditError(
                f"the audit signing key must be an EC or RSA key, not {type(signer).__name__}"
            )
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int):
            raise AuditError("checkpoint_every must be a whole number of records")
        if checkpoint_every < 1:
            raise AuditError(f"checkpoint_every must be at least 1, not {checkpoint_every}")
        if pq_signer is not None and not isinstance(pq_signer, mldsa.MLDSA65PrivateKey):
            raise AuditError(
                f"the post-quantum audit key must be ML-DSA-65, not {type(pq_signer).__name__}"
            )
        self._signer = signer
        self._pq_signer = pq_signer
        self._every = checkpoint_every
        self._clock = clock or (lambda: datetime.now(UTC))

    def _now(self) -> str:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise AuditError("the audit clock returned a naive datetime; it must be timezone-aware")
        return now.astimezone(UTC).isoformat(timespec="microseconds")

    def _sign(self, payload: bytes) -> bytes:
        signer = self._signer
        if signer is None:
            raise AuditError("no audit signing key is configured: cannot write a checkpoint")
        try:
            # Only sign() is called: the key may live on a PKCS#11 token.
            if isinstance(signer, ec.EllipticCurvePrivateKey):
                return signer.sign(payload, ec.ECDSA(hashes.SHA256()))
            return signer.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        except Exception as exc:  # a token can fail in many ways; all mean "not sealed"
            raise AuditError(
                f"the audit signing key could not sign a checkpoint ({exc}); check the key "
                "or token, the action was not recorded"
            ) from exc

    def _seal(self, seq: int, hash_: str) -> AuditCheckpoint:
        time = self._now()
        payload = checkpoint_payload(seq, hash_, time)
        signature = self._sign(payload)
        # ML-DSA-65 next to ECDSA: the checkpoint holds if either scheme falls.
        pq_signature = None if self._pq_signer is None else self._pq_signer.sign(payload)
        return AuditCheckpoint(
            seq=seq, hash=hash_, time=time, signature=signature, pq_signature=pq_signature
        )

    def append(
        self, session: Session, event: str, *, actor: str, data: Mapping[str, Any]
    ) -> AuditRecord:
        """Add one record inside the caller's transaction (the caller commits).

        Raises AuditError if the record cannot be written; the caller's transaction
        must then roll back so the action does not happen unrecorded.
        """
        return self.append_all(session, [(event, data)], actor=actor)[0]

    def append_all(
        self,
        session: Session,
        events: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        actor: str,
    ) -> list[AuditRecord]:
        """Add several records, in order, inside the caller's transaction: the head is
        locked and the records flushed once for all of them (a group commit for bulk
        work). Each record is hashed and chained, and sealed at a checkpoint, exactly
        as if appended one by one. AuditError (nothing written) as for `append`."""
        # Validate before touching the database: a refused record changes nothing.
        _check_actor(actor)
        encoded: list[tuple[str, str]] = []
        for event, data in events:
            _check_event(event)
            encoded.append((event, _encode_data(data)))
        records: list[AuditRecord] = []
        try:
            head = _lock_head(session)
            for event, data_text in encoded:
                # Timestamp under the lock, so record times follow seq order.
                time = self._now()
                seq = head.seq + 1
                # Hash the decoded stored text, exactly what the verifier will recompute.
                hash_ = record_hash(head.hash, seq, time, event, actor, json.loads(data_text))
                record = AuditRecord(
                    seq=seq,
                    time=time,
                    event=event,
                    actor=actor,
                    data=data_text,
                    prev_hash=head.hash,
                    hash=hash_,
                )
                session.add(record)
                records.append(record)
                head.seq = seq
                head.hash = hash_
                if self._signer is not None and seq % self._every == 0:
                    session.add(self._seal(seq, hash_))
            # Flush now so a failure surfaces here, as AuditError, not at the caller's commit.
            session.flush()
        except AuditError:
            raise
        except SQLAlchemyError as exc:
            first = encoded[0][0] if encoded else "?"
            # A connection that failed or was cut is an outage, not a refused write.
            kind = AuditUnavailable if is_outage(exc) else AuditError
            raise kind(f"could not write the audit record for {first!r}: {exc}") from exc
        return records

    def checkpoint(self, session: Session) -> AuditCheckpoint | None:
        """Seal the current head now (caller commits); None if empty or already sealed."""
        if self._signer is None:
            raise AuditError("no audit signing key is configured: cannot write a checkpoint")
        try:
            head = _lock_head(session)
            if head.seq == 0:
                return None
            if session.get(AuditCheckpoint, head.seq) is not None:
                return None
            # Never sign a head that disagrees with its record: that would bless tampering.
            stored = session.scalar(select(AuditRecord.hash).where(AuditRecord.seq == head.seq))
            if stored != head.hash:
                raise AuditIntegrityError(
                    f"the audit head (record {head.seq}) does not match the stored record: "
                    "refusing to seal it; run the audit verifier"
                )
            checkpoint = self._seal(head.seq, head.hash)
            session.add(checkpoint)
            session.flush()
        except AuditError:
            raise
        except SQLAlchemyError as exc:
            raise AuditError(f"could not write the audit checkpoint: {exc}") from exc
        return checkpoint
