"""The Key Recovery Service as a witness of an instance's audit checkpoints.

The service already stands apart from the CA, with its own key and log. Here it keeps
the checkpoint chain of each instance that hands its checkpoints in:

1. the first checkpoint pins the instance (by the id of its audit key) and its public
   audit keys; an ML-DSA-65 key may be added later, never changed or dropped;
2. every later checkpoint must *extend* the newest one held: it comes with the records
   between the two, which must chain from the held hash to the new one. A lower seq (a
   rollback), the same seq with another hash, or records that do not chain (a fork) are
   refused and the refusal is recorded in the service's own log;
3. each accepted checkpoint is countersigned with the service's audit key and kept; the
   service's log gets a ``checkpoint.witnessed`` record (and is sealed at once);
4. ``copy`` hands the kept chain back, countersignatures included, for verification.

The records sent along in step 2 are only checked, never kept.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailpki.audit import AuditLog
from mailpki.audit.keys import AuditKeys, signature_problem
from mailpki.audit.log import canonical, record_hash
from mailpki.audit.witness import SignedCheckpoint
from mailpki.errors import AuditError, InputError, RecoveryRefused
from mailpki.recovery.service import AUDIT_PUBLIC, RecoveryService
from mailpki.store.db import Database
from mailpki.store.models import WitnessedCheckpoint, WitnessedInstance

__all__ = [
    "MAX_LINKS",
    "SUBMISSION_FORMAT",
    "CheckpointWitness",
    "countersign_payload",
    "submission",
    "witness_of",
]

SUBMISSION_FORMAT = "mailpki-witness/1"
MAX_LINKS = 20_000
MAX_SUBMISSION_BYTES = 16 * 1024 * 1024
PAGE = 200
_LINK_FIELDS = ("seq", "time", "event", "actor", "data", "prev_hash", "hash")


def countersign_payload(
    witness: str, instance: str, checkpoint: SignedCheckpoint, received_at: str
) -> bytes:
    """The bytes the service's audit key signs for each checkpoint it keeps."""
    return canonical(
        {
            "witness": witness,
            "instance": instance,
            "seq": checkpoint.seq,
            "hash": checkpoint.hash,
            "time": checkpoint.time,
            "received_at": received_at,
        }
    )


def submission(keys: AuditKeys, checkpoint: SignedCheckpoint, links: list[dict[str, Any]]) -> bytes:
    """The body an instance sends: its keys, one checkpoint, the records since the last."""
    return json.dumps(
        {
            "format": SUBMISSION_FORMAT,
            "audit_key": keys.classic_pem,
            "mldsa_key": keys.mldsa_pem,
            "checkpoint": checkpoint.to_json(keys.instance_id),
            "links": links,
        },
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True)
class _Submission:
    keys: AuditKeys
    checkpoint: SignedCheckpoint
    links: list[dict[str, Any]]


def _parse(data: bytes) -> _Submission:
    if len(data) > MAX_SUBMISSION_BYTES:
        raise InputError("the checkpoint submission is too large")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        raise InputError("the checkpoint submission is not JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != SUBMISSION_FORMAT:
        raise InputError(f"the checkpoint submission is not {SUBMISSION_FORMAT}")
    if set(raw) != {"format", "audit_key", "mldsa_key", "checkpoint", "links"}:
        raise InputError("the checkpoint submission has missing or unknown fields")
    audit_key, mldsa_key, links = raw["audit_key"], raw["mldsa_key"], raw["links"]
    if not isinstance(audit_key, str) or not (mldsa_key is None or isinstance(mldsa_key, str)):
        raise InputError("'audit_key' and 'mldsa_key' must be PEM text")
    try:
        keys = AuditKeys.from_pem(
            audit_key.encode(), None if mldsa_key is None else mldsa_key.encode()
        )
        instance, checkpoint = SignedCheckpoint.from_json(raw["checkpoint"])
    except (AuditError, UnicodeEncodeError) as exc:
        raise InputError(str(exc)) from None
    if instance != keys.instance_id:
        raise InputError("the checkpoint names another instance than its audit key")
    if not isinstance(links, list) or len(links) > MAX_LINKS:
        raise InputError(f"'links' must be a list of at most {MAX_LINKS} records")
    for link in links:
        if not isinstance(link, dict) or set(link) != set(_LINK_FIELDS):
            raise InputError(f"each link must have exactly the fields {list(_LINK_FIELDS)}")
        if isinstance(link["seq"], bool) or not isinstance(link["seq"], int):
            raise InputError("a link's 'seq' must be a whole number")
        if not all(isinstance(link[k], str) for k in _LINK_FIELDS[1:]):
            raise InputError("a link's fields other than 'seq' must be text")
    return _Submission(keys, checkpoint, links)


def _chains(
    links: list[dict[str, Any]], last: WitnessedCheckpoint, new: SignedCheckpoint
) -> str | None:
    """Why ``links`` do not lead from ``last`` to ``new``, or None when they do."""
    if len(links) != new.seq - last.seq:
        return (
            f"it must come with records {last.seq + 1}..{new.seq} (the records since the "
            f"checkpoint held, {last.seq}), not {len(links)} records"
        )
    prev = last.hash
    for expected_seq, link in enumerate(links, last.seq + 1):
        if link["seq"] != expected_seq or link["prev_hash"] != prev:
            return f"record {expected_seq} does not follow the checkpoint held at {last.seq}"
        try:
            data = json.loads(link["data"])
        except (ValueError, RecursionError):
            return f"record {expected_seq} has data that is not JSON"
        digest = record_hash(prev, expected_seq, link["time"], link["event"], link["actor"], data)
        if digest != link["hash"]:
            return f"record {expected_seq} does not match its hash"
        prev = digest
    if prev != new.hash:
        return f"the records do not lead to the hash of checkpoint {new.seq}"
    return None


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


def _sign(key: Any, payload: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(payload, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    raise AuditError("the recovery service's audit key cannot countersign")


class CheckpointWitness:
    """Keeps, checks and countersigns instances' checkpoint chains (see module doc)."""

    def __init__(
        self,
        *,
        db: Database,
        audit: Callable[[], AuditLog],
        signer: Callable[[], Any],
        countersign_key_pem: bytes,
        witness_id: str,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self._audit = audit
        self._signer = signer
        self._public_pem = countersign_key_pem
        self.witness_id = witness_id
        self._clock = clock or (lambda: datetime.now(UTC))

    def accept(self, data: bytes) -> dict[str, Any]:
        """Check and keep one checkpoint; RecoveryRefused (recorded) if it does not extend."""
        try:
            sub = _parse(data)
        except InputError as exc:
            self._refused(None, None, str(exc))
            raise
        instance = sub.keys.instance_id
        try:
            with self._db.transaction() as session:
                receipt = self._accept(session, sub)
                self._audit().checkpoint(session)
        except RecoveryRefused as exc:
            self._refused(instance, sub.checkpoint.seq, str(exc))
            raise
        return receipt

    def _accept(self, session: Session, sub: _Submission) -> dict[str, Any]:
        now = self._clock()
        cp, instance = sub.checkpoint, sub.keys.instance_id
        pinned = session.get(WitnessedInstance, instance, with_for_update=True)
        if pinned is None:
            pinned = WitnessedInstance(
                id=instance, audit_key=sub.keys.classic_pem, mldsa_key=sub.keys.mldsa_pem,
                first_seen=now,
            )  # fmt: skip
            session.add(pinned)
            session.flush()
        elif pinned.mldsa_key is None and sub.keys.mldsa_pem is not None:
            pinned.mldsa_key = sub.keys.mldsa_pem  # the post-quantum key is added once
        elif pinned.mldsa_key != sub.keys.mldsa_pem:
            raise RecoveryRefused(
                "this instance's ML-DSA-65 audit key differs from the one pinned here: refused"
            )
        keys = AuditKeys.from_pem(
            pinned.audit_key.encode(),
            None if pinned.mldsa_key is None else pinned.mldsa_key.encode(),
        )
        why = signature_problem(
            keys, cp.seq, cp.hash, cp.time, cp.signature, cp.pq_signature,
            pq_required=keys.mldsa is not None,
        )  # fmt: skip
        if why is not None:
            raise RecoveryRefused(f"checkpoint {cp.seq} refused: {why}")
        last = session.scalar(
            select(WitnessedCheckpoint)
            .where(WitnessedCheckpoint.instance_id == instance)
            .order_by(WitnessedCheckpoint.seq.desc())
            .limit(1)
        )
        if last is not None:
            if cp.seq < last.seq:
                same = session.scalar(
                    select(WitnessedCheckpoint).where(
                        WitnessedCheckpoint.instance_id == instance,
                        WitnessedCheckpoint.seq == cp.seq,
                    )
                )
                if same is not None and same.hash == cp.hash and same.time == cp.time:
                    return self._receipt(instance, same)  # a late duplicate (two sealers)
                raise RecoveryRefused(
                    f"checkpoint {cp.seq} refused: this witness already holds checkpoint "
                    f"{last.seq} of the instance (a rollback)"
                )
            if cp.seq == last.seq:
                if cp.hash == last.hash and cp.time == last.time:
                    return self._receipt(instance, last)
                raise RecoveryRefused(
                    f"checkpoint {cp.seq} refused: it differs from the checkpoint {last.seq} "
                    "held here (a fork)"
                )
            broken = _chains(sub.links, last, cp)
            if broken is not None:
                raise RecoveryRefused(
                    f"checkpoint {cp.seq} refused: it does not extend checkpoint {last.seq} "
                    f"held here (a fork or a rewrite): {broken}"
                )
        received = now.isoformat(timespec="microseconds")
        row = WitnessedCheckpoint(
            instance_id=instance, seq=cp.seq, hash=cp.hash, time=cp.time,
            signature=cp.signature, pq_signature=cp.pq_signature, received_at=received,
            countersignature=_sign(
                self._signer(), countersign_payload(self.witness_id, instance, cp, received)
            ),
        )  # fmt: skip
        session.add(row)
        self._audit().append(
            session,
            "checkpoint.witnessed",
            actor=f"instance:{instance[:16]}",
            data={"instance": instance, "seq": cp.seq, "hash": cp.hash, "time": cp.time},
        )
        return self._receipt(instance, row)

    def _receipt(self, instance: str, row: WitnessedCheckpoint) -> dict[str, Any]:
        return {
            "witness": self.witness_id,
            "instance": instance,
            "seq": row.seq,
            "hash": row.hash,
            "received_at": row.received_at,
            "countersignature": _b64(row.countersignature),
        }

    def _refused(self, instance: str | None, seq: int | None, reason: str) -> None:
        with self._db.transaction() as session:
            self._audit().append(
                session,
                "checkpoint.refused",
                actor="instance:" + (instance[:16] if instance else "unknown"),
                data={"instance": instance, "seq": seq, "reason": reason[:500]},
            )
            self._audit().checkpoint(session)

    def copy(self, instance: str, *, after: int = 0) -> dict[str, Any]:
        """The chain held for ``instance`` past ``after`` (one page; ``more`` if cut)."""
        with self._db.session() as session:
            rows = session.scalars(
                select(WitnessedCheckpoint)
                .where(WitnessedCheckpoint.instance_id == instance, WitnessedCheckpoint.seq > after)
                .order_by(WitnessedCheckpoint.seq)
                .limit(PAGE + 1)
            ).all()
            last = session.scalar(
                select(func.max(WitnessedCheckpoint.seq)).where(
                    WitnessedCheckpoint.instance_id == instance
                )
            )
        checkpoints = [
            {
                **SignedCheckpoint(
                    r.seq,
                    r.hash,
                    r.time,
                    bytes(r.signature),
                    None if not r.pq_signature else bytes(r.pq_signature),
                ).to_json(instance),
                "received_at": r.received_at,
                "countersignature": _b64(r.countersignature),
            }
            for r in rows[:PAGE]
        ]
        return {
            "witness": self.witness_id,
            "countersign_key": self._public_pem.decode(),
            "instance": instance,
            "last_seq": int(last or 0),
            "checkpoints": checkpoints,
            "more": len(rows) > PAGE,
        }


def witness_of(service: RecoveryService) -> CheckpointWitness:
    """The witness of a RecoveryService (its database, audit log and audit key)."""
    public_pem = (service.home / AUDIT_PUBLIC).read_bytes()
    serialization.load_pem_public_key(public_pem)  # fail early on a broken home
    return CheckpointWitness(
        db=service.db,
        audit=lambda: service.audit,  # unlocked only to keep a checkpoint: reading needs no key
        signer=lambda: service.keys.load(service.audit_label),
        countersign_key_pem=public_pem,
        witness_id=service.service_id,
    )
