"""The instance's audit keys: the classical one (key store) and the ML-DSA-65 one.

The ML-DSA-65 key is made at first use: by `mailpki init` for a new instance, and for
an instance made before post-quantum checkpoints by `mailpki upgrade` (or else by the
first command that writes to the audit log). Making it migrates the database (checkpoints
gain an ML-DSA column) and writes an ``audit.key_added`` record, sealed at once with
both keys: from that record on, every checkpoint must carry both signatures.

The key is always an encrypted PKCS#8 file (`keys/audit-mldsa.pem`, PBES2 AES-256 under
the key store's secret, 0600), even when the other keys live on a PKCS#11 token:
tokens do not do ML-DSA yet (SoftHSM2 2.6 has no such mechanism). The classical audit
key stays on the token, so a checkpoint's ECDSA signature still needs the token.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, mldsa, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from mailpki.audit import AuditLog
from mailpki.audit.keys import KEY_ADDED, MLDSA65, AuditKeys, key_id
from mailpki.base.settings import SettingsFile
from mailpki.errors import InstanceError, KeyStoreError
from mailpki.keystore.configured import store_secret
from mailpki.keystore.keys import encrypt_pkcs8_pem
from mailpki.store.db import Database

__all__ = ["MLDSA_KEY_FILE", "MLDSA_PUBLIC_KEY", "audit_keys", "load_or_create_mldsa"]

MLDSA_KEY_FILE = "audit-mldsa.pem"
MLDSA_PUBLIC_KEY = "audit-key-mldsa.pub.pem"
AUDIT_PUBLIC_KEY = "audit-key.pub.pem"


def audit_keys(ca_dir: Path) -> AuditKeys:
    """The public audit keys kept beside the CA certificates (ML-DSA if made yet)."""
    classic = ca_dir / AUDIT_PUBLIC_KEY
    pq = ca_dir / MLDSA_PUBLIC_KEY
    try:
        return AuditKeys.from_pem(classic.read_bytes(), pq.read_bytes() if pq.is_file() else None)
    except OSError as exc:
        raise InstanceError(f"cannot read the audit public key {classic}: {exc.strerror}") from None


def _load(path: Path, secret: bytes) -> mldsa.MLDSA65PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), secret)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyStoreError(
            f"cannot unlock the ML-DSA audit key {path}: wrong passphrase or damaged file ({exc})"
        ) from None
    if not isinstance(key, mldsa.MLDSA65PrivateKey):
        raise KeyStoreError(f"{path} is not an ML-DSA-65 key")
    return key


def _write_once(path: Path, data: bytes, mode: int) -> bool:
    """Write ``data`` to ``path`` unless it exists (atomic: False if another won)."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)


def load_or_create_mldsa(
    *,
    config: SettingsFile,
    keys_dir: Path,
    ca_dir: Path,
    db: Database,
    classic: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    checkpoint_every: int,
    actor: str,
) -> mldsa.MLDSA65PrivateKey:
    """The ML-DSA-65 audit key; made, recorded and sealed on first use (see module doc)."""
    secret = store_secret(config)
    path = keys_dir / MLDSA_KEY_FILE
    if path.is_file():
        return _load(path, secret)
    db.migrate()  # an instance from before: checkpoints gain their ML-DSA column
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = mldsa.MLDSA65PrivateKey.generate()
    # encrypt_pkcs8_pem wraps any PKCS#8 key (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC).
    if not _write_once(path, encrypt_pkcs8_pem(key, secret), 0o600):  # type: ignore[arg-type]
        return _load(path, secret)  # another process made it first
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    _write_once(ca_dir / MLDSA_PUBLIC_KEY, public, 0o644)
    log = AuditLog(signer=classic, pq_signer=key, checkpoint_every=checkpoint_every)
    with db.transaction() as session:
        log.append(
            session,
            KEY_ADDED,
            actor=actor,
            data={"algorithm": MLDSA65, "key_id": key_id(key.public_key()), "use": "checkpoints"},
        )
        log.checkpoint(session)
    return key
