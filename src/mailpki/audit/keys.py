"""The public keys that check an audit log's checkpoints: ECDSA (or RSA) and ML-DSA-65.

A checkpoint carries the classical signature always, and an ML-DSA-65 signature over the
same payload from the moment the post-quantum key was added. That moment is itself a
record of the log (``audit.key_added``): checkpoints sealed from it on must carry both
signatures, so stripping the ML-DSA one is seen; older checkpoints keep verifying with
ECDSA alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailpki.audit.log import checkpoint_payload
from mailpki.errors import AuditError
from mailpki.store.models import AuditRecord

__all__ = [
    "KEY_ADDED",
    "MLDSA65",
    "AuditKeys",
    "key_id",
    "pq_required_from",
    "signature_problem",
]

KEY_ADDED = "audit.key_added"
MLDSA65 = "ML-DSA-65"
ClassicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def key_id(key: ClassicKey | mldsa.MLDSA65PublicKey) -> str:
    """Hex SHA-256 of the key's SubjectPublicKeyInfo (DER)."""
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _pem(key: ClassicKey | mldsa.MLDSA65PublicKey) -> str:
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class AuditKeys:
    """The audit public keys of one instance (``mldsa`` is None before the upgrade)."""

    classic: ClassicKey
    mldsa: mldsa.MLDSA65PublicKey | None = None

    @classmethod
    def from_pem(cls, classic_pem: bytes, mldsa_pem: bytes | None = None) -> AuditKeys:
        try:
            classic = load_pem_public_key(classic_pem)
            pq = None if mldsa_pem is None else load_pem_public_key(mldsa_pem)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise AuditError(f"an audit public key is not a PEM public key: {exc}") from None
        if not isinstance(classic, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise AuditError(
                f"the audit public key must be EC or RSA, not {type(classic).__name__}"
            )
        if pq is not None and not isinstance(pq, mldsa.MLDSA65PublicKey):
            raise AuditError(
                f"the post-quantum audit key must be ML-DSA-65, not {type(pq).__name__}"
            )
        return cls(classic, pq)

    @property
    def instance_id(self) -> str:
        """Names the instance to witnesses: the id of its classical audit key."""
        return key_id(self.classic)

    @property
    def classic_pem(self) -> str:
        return _pem(self.classic)

    @property
    def mldsa_pem(self) -> str | None:
        return None if self.mldsa is None else _pem(self.mldsa)

    def verify_classic(self, payload: bytes, signature: bytes) -> bool:
        try:
            if isinstance(self.classic, ec.EllipticCurvePublicKey):
                self.classic.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            else:
                self.classic.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True

    def verify_mldsa(self, payload: bytes, signature: bytes) -> bool:
        if self.mldsa is None:
            return False
        try:
            self.mldsa.verify(signature, payload)
        except (InvalidSignature, ValueError):
            return False
        return True


def signature_problem(
    keys: AuditKeys,
    seq: int,
    hash_: str,
    time: str,
    signature: bytes,
    pq_signature: bytes | None,
    *,
    pq_required: bool,
) -> str | None:
    """Why a checkpoint's signatures do not hold, or None when they do."""
    payload = checkpoint_payload(seq, hash_, time)
    if not keys.verify_classic(payload, signature):
        return "its ECDSA signature does not verify with the audit key"
    if pq_signature:
        if keys.mldsa is None:
            return "it carries an ML-DSA-65 signature but no ML-DSA-65 audit key was given"
        if not keys.verify_mldsa(payload, pq_signature):
            return "its ML-DSA-65 signature does not verify with the post-quantum audit key"
    elif pq_required:
        return "its ML-DSA-65 signature is missing (checkpoints after the key was added carry one)"
    return None


def pq_required_from(session: Session, keys: AuditKeys) -> int | None:
    """The seq from which checkpoints must carry ML-DSA-65 (None: never, no such key)."""
    if keys.mldsa is None:
        return None
    wanted = key_id(keys.mldsa)
    rows = session.execute(
        select(AuditRecord.seq, AuditRecord.data)
        .where(AuditRecord.event == KEY_ADDED)
        .order_by(AuditRecord.seq)
    )
    for seq, data in rows:
        try:
            value = json.loads(data)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("key_id") == wanted:
            return int(seq)
    return None
