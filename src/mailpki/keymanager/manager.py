"""The Key Manager: central key generation, escrow records and the key pool.

It never decides who gets a certificate (that is enrollment's job) and it can never
open a recovery block (only the Key Recovery Service holds that key). What it
guarantees is ordering: a central key is escrowed, and the escrow record committed
with its certificate, before anything can deliver that key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.x509.oid import NameOID
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mailpki.errors import EscrowError, NotFoundError
from mailpki.keystore.key_types import KeyType
from mailpki.keystore.keys import PBKDF2_ITERATIONS, generate_private_key
from mailpki.keystore.recovery_block import (
    PrivateKey,
    RecoveryBlock,
    TransportKey,
    oaep,
    open_block,
    seal,
    spki_sha256,
)
from mailpki.store.db import Database
from mailpki.store.models import EscrowedKey, PooledKey

log = logging.getLogger(__name__)
PENDING, DELIVERED, REVOKED = "pending", "delivered", "revoked"
# Keys the Key Manager generates for subscribers (P-256 only where a profile allows it).
SUBSCRIBER_KEY_TYPES: tuple[str, ...] = ("rsa2048", "rsa3072", "p256")


class PoolCipher:
    """Encrypts pooled private keys at rest for the Key Manager's own later use.

    The key comes from the instance's secret (key passphrase or token PIN) through
    PBKDF2 (the same cost as the CA key files, paid once per process) with a random
    per-instance salt; the pool row's public-key hash is the associated data, so a
    ciphertext cannot be moved to another row.
    """

    def __init__(self, secret: bytes, salt: bytes) -> None:
        key = PBKDF2HMAC(
            algorithm=hashes.SHA256(), length=32, salt=salt, iterations=PBKDF2_ITERATIONS
        ).derive(secret)
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "PoolCipher(<key hidden>)"

    def encrypt(self, private_key: PrivateKey, spki_hash: str) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        pkcs8 = private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return nonce, self._aead.encrypt(nonce, pkcs8, bytes.fromhex(spki_hash))

    def decrypt(self, nonce: bytes, ciphertext: bytes, spki_hash: str) -> PrivateKey:
        try:
            pkcs8 = self._aead.decrypt(nonce, ciphertext, bytes.fromhex(spki_hash))
        except InvalidTag:
            raise EscrowError(
                "a pooled key does not decrypt: the key passphrase changed or the pool was "
                "tampered with; empty it with 'mailpki keys pool clear'"
            ) from None
        # Authenticated by AES-GCM: the RSA consistency check (~40 ms) adds nothing.
        key = serialization.load_der_private_key(
            pkcs8, password=None, unsafe_skip_rsa_key_validation=True
        )
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise EscrowError("a pooled key is of an unsupported type")
        return key


@dataclass(frozen=True)
class EscrowedKeyPair:
    """A private key and its recovery block, ready to be certified and delivered."""

    private_key: PrivateKey
    block: RecoveryBlock
    from_pool: bool


@dataclass(frozen=True)
class EscrowInfo:
    serial: str
    owner_email: str
    key_type: str
    state: str
    created_at: datetime
    delivered_at: datetime | None


class KeyManager:
    def __init__(
        self,
        db: Database,
        transport: TransportKey,
        *,
        pool_cipher: Callable[[], PoolCipher] | None = None,
        delivery_lease: timedelta = timedelta(minutes=10),
    ) -> None:
        self.db = db
        self.transport = transport
        # Deriving the pool key costs a PBKDF2 run: only when the pool is used.
        self._pool_cipher_factory = pool_cipher
        self._pool_cipher: PoolCipher | None = None
        self.delivery_lease = delivery_lease

    @property
    def has_pool(self) -> bool:
        return self._pool_cipher_factory is not None

    @property
    def pool_cipher(self) -> PoolCipher:
        if self._pool_cipher_factory is None:
            raise EscrowError("this Key Manager has no pool key; the pool is off")
        if self._pool_cipher is None:
            self._pool_cipher = self._pool_cipher_factory()
        return self._pool_cipher

    # -- keys ---------------------------------------------------------------------------

    def new_key_pair(self, key_type: KeyType) -> EscrowedKeyPair:
        """A key pair with its recovery block: from the pool when it has one, else fresh."""
        pooled = self.take_from_pool(key_type)
        if pooled is not None:
            return pooled
        key = generate_private_key(key_type)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):  # pragma: no cover
            raise EscrowError("unsupported key type")
        return EscrowedKeyPair(key, seal(key, key_type, self.transport), from_pool=False)

    def escrow(self, private_key: PrivateKey, key_type: str) -> RecoveryBlock:
        return seal(private_key, key_type, self.transport)

    # -- escrow records -----------------------------------------------------------------

    def record(
        self, session: Session, block: RecoveryBlock, *, serial: str, owner_email: str
    ) -> None:
        """Store the recovery block with its owner, in the caller's certificate transaction.

        The record starts 'pending' with a lease: if the delivery does not finish before
        the lease ends, `reconcile` revokes the certificate.
        """
        if block.krs_key_id != self.transport.key_id:
            raise EscrowError(
                "the recovery block was made for another recovery service key than the "
                "one this instance pins; refusing to store a block nobody could open"
            )
        now = datetime.now(UTC)
        session.add(
            EscrowedKey(
                serial=serial,
                owner_email=owner_email,
                **asdict(block),
                state=PENDING,
                lease_until=now + self.delivery_lease,
                created_at=now,
            )
        )
        session.flush()  # a duplicate serial or key fails here, inside the transaction

    def mark_delivered(self, session: Session, serial: str) -> None:
        self.mark_all_delivered(session, [serial])

    def mark_all_delivered(self, session: Session, serials: Sequence[str]) -> None:
        """Flip pending records to delivered, in one statement per 500; EscrowError (the
        caller rolls back) if any of them is no longer pending."""
        now = datetime.now(UTC)
        done = 0
        for start in range(0, len(serials), 500):
            chunk = list(serials[start : start + 500])
            result = session.execute(
                update(EscrowedKey)
                .where(EscrowedKey.serial.in_(chunk), EscrowedKey.state == PENDING)
                .values(state=DELIVERED, delivered_at=now)
            )
            done += result.rowcount  # type: ignore[attr-defined]
        if done != len(set(serials)):
            which = serials[0] if len(serials) == 1 else f"one of {len(serials)} keys"
            raise EscrowError(
                f"the escrow record of {which} is no longer pending (revoked by reconcile?); "
                "the key must not be delivered"
            )

    def mark_revoked(self, session: Session, serial: str) -> None:
        session.execute(
            update(EscrowedKey).where(EscrowedKey.serial == serial).values(state=REVOKED)
        )

    def undelivered(self, session: Session, *, older_than: datetime | None) -> list[str]:
        """Serials whose delivery lease ended (before `older_than`) without delivery
        (crash, kill, lost client); with None, every pending one."""
        query = select(EscrowedKey.serial).where(EscrowedKey.state == PENDING)
        if older_than is not None:
            query = query.where(EscrowedKey.lease_until < older_than)
        return list(session.scalars(query.order_by(EscrowedKey.id)))

    def block_for(self, *, email: str, serial: str | None = None) -> tuple[str, RecoveryBlock]:
        """(serial, block) of `email`'s newest escrowed key, or of `serial`."""
        query = select(EscrowedKey).where(EscrowedKey.owner_email == email.strip().lower())
        if serial is not None:
            query = query.where(EscrowedKey.serial == serial)
        with self.db.session() as session:
            row = session.scalar(query.order_by(EscrowedKey.id.desc()).limit(1))
            if row is None:
                what = f"certificate {serial} of {email}" if serial else email
                raise NotFoundError(f"no escrowed key for {what}")
            return row.serial, _block_of(row)

    def history_of(self, email: str) -> list[tuple[str, RecoveryBlock]]:
        """(serial, block) of every delivered escrowed key of `email`, newest first: the
        person's whole key history. In dual-key mode only encryption halves are escrowed,
        so this is every key that ever decrypted mail; a key whose delivery never
        finished (pending, or revoked by reconcile) opened no mail and is left out."""
        query = (
            select(EscrowedKey)
            .where(EscrowedKey.owner_email == email.strip().lower(), EscrowedKey.state == DELIVERED)
            .order_by(EscrowedKey.id.desc())
        )
        with self.db.session() as session:
            return [(row.serial, _block_of(row)) for row in session.scalars(query)]

    def escrowed(self, *, email: str | None = None) -> list[EscrowInfo]:
        query = select(EscrowedKey).order_by(EscrowedKey.id)
        if email is not None:
            query = query.where(EscrowedKey.owner_email == email.strip().lower())
        with self.db.session() as session:
            return [
                EscrowInfo(
                    r.serial, r.owner_email, r.key_type, r.state, r.created_at, r.delivered_at
                )
                for r in session.scalars(query)
            ]

    def recover(
        self,
        *,
        email: str,
        serial: str,
        certificate_public_key: PublicKeyTypes,
        encrypted_aes_key: bytes,
        admin_key: rsa.RSAPrivateKey,
    ) -> PrivateKey:
        """The admin side of a recovery: the AES key the Key Recovery Service released
        (RSA-OAEP to the admin's certificate) opens the stored block. EscrowError if the
        key was not for this admin, or the block was tampered with or swapped."""
        try:
            aes_key = admin_key.decrypt(encrypted_aes_key, oaep("sha256"))
        except ValueError:
            raise EscrowError(
                "the recovered key is not encrypted to this admin's certificate"
            ) from None
        _, block = self.block_for(email=email, serial=serial)
        return open_block(block, aes_key, certificate_public_key)

    @staticmethod
    def new_admin_key() -> rsa.RSAPrivateKey:
        """An administrator's key (RSA: the recovery service encrypts to it). Never
        escrowed: an admin key other admins could recover would let them act as that
        admin; a lost one is revoked and replaced."""
        key = generate_private_key("rsa2048")
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    @staticmethod
    def new_signing_key(key_type: KeyType, mail: str) -> tuple[PrivateKey, bytes]:
        """A dual-key signing key made on the person's behalf (the portal runs no script
        that could make it in the browser), with a CSR for it: never escrowed and never
        stored, it exists only until it is packaged for that person. The CA takes the
        names from the directory, not from the CSR."""
        key = generate_private_key(key_type)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):  # pragma: no cover
            raise EscrowError("unsupported key type")
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, mail)]))
            .sign(key, hashes.SHA256())
        )
        return key, csr.public_bytes(serialization.Encoding.PEM)

    # -- the pool -----------------------------------------------------------------------

    def pool_size(self, key_type: str | None = None) -> int:
        with self.db.session() as session:
            query = select(func.count()).select_from(PooledKey)
            if key_type is not None:
                query = query.where(PooledKey.key_type == key_type)
            return int(session.scalar(query) or 0)

    def make_pooled(self, key_type: KeyType) -> PooledKey:
        """One fresh key pair, escrowed and encrypted for the pool (not yet stored)."""
        cipher = self.pool_cipher
        key = generate_private_key(key_type)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):  # pragma: no cover
            raise EscrowError("unsupported key type")
        block = seal(key, key_type, self.transport)
        local_nonce, local_ciphertext = cipher.encrypt(key, block.spki_sha256)
        return PooledKey(
            **asdict(block),
            local_nonce=local_nonce,
            local_ciphertext=local_ciphertext,
            created_at=datetime.now(UTC),
        )

    def fill_pool(
        self,
        key_type: KeyType,
        target: int,
        *,
        progress: Callable[[int], None] | None = None,
        make: Callable[[KeyType], PooledKey] | None = None,
    ) -> int:
        """Add keys until the pool holds `target` keys of `key_type`; returns how many."""
        added = 0
        make = make or self.make_pooled
        while self.pool_size(key_type) < target:
            row = make(key_type)
            with self.db.transaction() as session:
                session.add(row)
            added += 1
            if progress is not None:
                progress(added)
        return added

    def take_from_pool(self, key_type: str) -> EscrowedKeyPair | None:
        """Claim one pooled key by deleting its row; a key is handed out at most once.

        The row is decrypted before it is deleted: a pool that does not decrypt (the key
        passphrase changed) is left alone and the caller makes a fresh key. If this
        process dies before the certificate is stored, the claimed key is simply gone:
        it was never delivered, so there is nothing to revoke.
        """
        if not self.has_pool:
            return None
        with self.db.session() as session:
            if not session.scalar(
                select(PooledKey.id).where(PooledKey.key_type == key_type).limit(1)
            ):
                return None
        cipher = self.pool_cipher  # derive the pool key (PBKDF2) outside any write lock
        for _ in range(5):  # another process may claim the same row first
            try:
                with self.db.transaction() as session:
                    row = session.scalar(
                        select(PooledKey)
                        .where(
                            PooledKey.key_type == key_type,
                            PooledKey.krs_key_id == self.transport.key_id,
                            PooledKey.wrap == self.transport.wrap,
                        )
                        .order_by(PooledKey.id)
                        .limit(1)
                    )
                    if row is None:
                        return None
                    block = _block_of(row)
                    key = cipher.decrypt(row.local_nonce, row.local_ciphertext, block.spki_sha256)
                    if spki_sha256(key.public_key()) != block.spki_sha256:
                        raise EscrowError("a pooled key does not match its recovery block")
                    claimed = session.execute(delete(PooledKey).where(PooledKey.id == row.id))
                    if claimed.rowcount != 1:  # type: ignore[attr-defined]
                        continue
            except EscrowError as exc:
                log.warning("not using the key pool: %s", exc)
                return None
            return EscrowedKeyPair(key, block, from_pool=True)
        return None

    def clear_pool(self) -> int:
        with self.db.transaction() as session:
            result = session.execute(delete(PooledKey))
            return int(result.rowcount)  # type: ignore[attr-defined]


def _block_of(row: EscrowedKey | PooledKey) -> RecoveryBlock:
    # The tables store a block's fields under the same names.
    return RecoveryBlock(**{f.name: getattr(row, f.name) for f in fields(RecoveryBlock)})
