"""The Key Manager over a migrated SQLite database: pool, escrow records, delivery lease."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select

from mailpki.errors import EscrowError, NotFoundError, StoreError
from mailpki.keymanager.manager import DELIVERED, PENDING, REVOKED, KeyManager, PoolCipher
from mailpki.keystore.recovery_block import (
    RecoveryBlock,
    TransportKey,
    oaep,
    open_block,
    spki_sha256,
    split_unwrapped,
)
from mailpki.store.db import Database
from mailpki.store.models import CertificateRecord, EscrowedKey, PooledKey, SerialReservation

SECRET = b"the instance key passphrase"
SALT = bytes.fromhex("00112233445566778899aabbccddeeff")
LEASE = timedelta(minutes=10)


@pytest.fixture(scope="module")
def transport_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@pytest.fixture(scope="module")
def transport(transport_private: rsa.RSAPrivateKey) -> TransportKey:
    return TransportKey(transport_private.public_key(), "sha256")


@pytest.fixture(scope="module")
def other_transport() -> TransportKey:
    """Another recovery service's key: blocks made for it are useless here."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return TransportKey(key.public_key(), "sha256")


@pytest.fixture(scope="module")
def cipher() -> PoolCipher:
    return PoolCipher(SECRET, SALT)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'mailpki.db'}")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def manager(db: Database, transport: TransportKey, cipher: PoolCipher) -> KeyManager:
    return KeyManager(db, transport, pool_cipher=lambda: cipher, delivery_lease=LEASE)


def add_certificate(db: Database, serial: str, email: str = "alice@example.com") -> None:
    """The rows an escrow record's foreign key needs (a CA-less stand-in)."""
    now = datetime.now(UTC)
    with db.transaction() as session:
        session.add(SerialReservation(serial=serial, issuer="issuing", reserved_at=now))
        session.flush()
        session.add(
            CertificateRecord(
                serial=serial,
                issuer="issuing",
                subject=f"CN={email}",
                email=email,
                profile="sponsored-multipurpose",
                not_before=now,
                not_after=now + timedelta(days=365),
                fingerprint=os.urandom(32).hex(),
                der=b"not a real certificate",
                status="valid",
                crl_partition=0,
                created_at=now,
            )
        )


def record(manager: KeyManager, serial: str, email: str = "alice@example.com") -> RecoveryBlock:
    add_certificate(manager.db, serial, email)
    block = manager.new_key_pair("p256").block
    with manager.db.transaction() as session:
        manager.record(session, block, serial=serial, owner_email=email)
    return block


def state_of(db: Database, serial: str) -> str:
    with db.session() as session:
        return str(session.scalar(select(EscrowedKey.state).where(EscrowedKey.serial == serial)))


def public_der(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- the pool -------------------------------------------------------------------------------


def test_pool_fill_then_take_each_key_at_most_once(
    manager: KeyManager, transport_private: rsa.RSAPrivateKey
) -> None:
    progress: list[int] = []
    assert manager.fill_pool("p256", 3, progress=progress.append) == 3
    assert progress == [1, 2, 3]
    assert manager.pool_size("p256") == 3 and manager.pool_size() == 3
    assert manager.fill_pool("p256", 3) == 0  # already full

    taken = [manager.take_from_pool("p256") for _ in range(4)]
    assert taken[3] is None
    pairs = [pair for pair in taken if pair is not None]
    assert len(pairs) == 3 and all(pair.from_pool for pair in pairs)
    assert len({pair.block.spki_sha256 for pair in pairs}) == 3
    assert manager.pool_size() == 0
    for pair in pairs:
        # The private key matches its escrow block, and the block opens to the same key.
        assert spki_sha256(pair.private_key.public_key()) == pair.block.spki_sha256
        aes_key, bound = split_unwrapped(
            transport_private.decrypt(pair.block.wrapped_key, oaep(pair.block.oaep_hash))
        )
        assert bound == pair.block.spki_sha256
        opened = open_block(pair.block, aes_key, pair.private_key.public_key())
        assert public_der(opened) == public_der(pair.private_key)
    # Empty pool: a fresh key, escrowed on the spot.
    fresh = manager.new_key_pair("p256")
    assert not fresh.from_pool
    assert fresh.block.spki_sha256 not in {pair.block.spki_sha256 for pair in pairs}


def test_concurrent_takers_never_share_a_pooled_key(manager: KeyManager) -> None:
    manager.fill_pool("p256", 4)
    with ThreadPoolExecutor(max_workers=6) as pool:
        taken = list(pool.map(lambda _: manager.take_from_pool("p256"), range(6)))
    pairs = [pair for pair in taken if pair is not None]
    assert len(pairs) == 4 and taken.count(None) == 2
    assert len({pair.block.spki_sha256 for pair in pairs}) == 4
    assert manager.pool_size() == 0


def test_take_only_keys_of_the_type_and_the_pinned_recovery_key(
    manager: KeyManager, other_transport: TransportKey, cipher: PoolCipher
) -> None:
    manager.fill_pool("p256", 2)
    assert manager.take_from_pool("rsa2048") is None
    elsewhere = KeyManager(manager.db, other_transport, pool_cipher=lambda: cipher)
    assert elsewhere.take_from_pool("p256") is None  # blocks for a recovery key it does not pin
    assert manager.pool_size("p256") == 2
    assert manager.clear_pool() == 2
    assert manager.pool_size() == 0 and manager.take_from_pool("p256") is None


def test_a_wrong_pool_secret_leaves_the_pool_alone_and_falls_back(
    manager: KeyManager, transport: TransportKey, caplog: pytest.LogCaptureFixture
) -> None:
    manager.fill_pool("p256", 1)
    wrong_cipher = PoolCipher(b"another passphrase", SALT)
    wrong = KeyManager(manager.db, transport, pool_cipher=lambda: wrong_cipher)
    assert wrong.take_from_pool("p256") is None
    assert "does not decrypt" in caplog.text
    assert manager.pool_size("p256") == 1  # not burnt: the right key still takes it
    assert not wrong.new_key_pair("p256").from_pool
    assert manager.take_from_pool("p256") is not None


def test_pool_cipher_binds_the_ciphertext_to_its_row(cipher: PoolCipher) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    spki = spki_sha256(key.public_key())
    nonce, ciphertext = cipher.encrypt(key, spki)
    assert public_der(cipher.decrypt(nonce, ciphertext, spki)) == public_der(key)
    other = spki_sha256(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(EscrowError):
        cipher.decrypt(nonce, ciphertext, other)  # moved to another row
    with pytest.raises(EscrowError):
        PoolCipher(SECRET, bytes(16)).decrypt(nonce, ciphertext, spki)  # another salt
    with pytest.raises(EscrowError):
        cipher.decrypt(nonce, ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]), spki)
    assert "passphrase" not in repr(cipher) and SECRET.decode() not in repr(cipher)


def test_a_pool_row_swapped_with_another_is_refused(manager: KeyManager) -> None:
    manager.fill_pool("p256", 2)
    with manager.db.transaction() as session:
        one, two = session.scalars(select(PooledKey).order_by(PooledKey.id)).all()
        one.local_nonce, two.local_nonce = two.local_nonce, one.local_nonce
        one.local_ciphertext, two.local_ciphertext = two.local_ciphertext, one.local_ciphertext
    assert manager.take_from_pool("p256") is None  # refused, and nothing handed out
    assert manager.pool_size("p256") == 2


def test_without_a_pool_cipher_the_pool_is_off(db: Database, transport: TransportKey) -> None:
    manager = KeyManager(db, transport)
    assert manager.take_from_pool("p256") is None
    with pytest.raises(EscrowError, match="pool is off"):
        manager.make_pooled("p256")
    assert not manager.new_key_pair("p256").from_pool


# -- escrow records -------------------------------------------------------------------------


def test_record_refuses_a_block_for_another_recovery_key(
    manager: KeyManager, other_transport: TransportKey
) -> None:
    add_certificate(manager.db, "A1")
    foreign = KeyManager(manager.db, other_transport).new_key_pair("p256").block
    with (
        pytest.raises(EscrowError, match="another recovery service key"),
        manager.db.transaction() as session,
    ):
        manager.record(session, foreign, serial="A1", owner_email="alice@example.com")
    assert manager.escrowed() == []


def test_record_then_deliver_once(manager: KeyManager) -> None:
    block = record(manager, "B1")
    assert state_of(manager.db, "B1") == PENDING
    serial, stored = manager.block_for(email="ALICE@example.com")
    assert serial == "B1" and stored == block
    with manager.db.transaction() as session:
        manager.mark_delivered(session, "B1")
    assert state_of(manager.db, "B1") == DELIVERED
    [info] = manager.escrowed(email="alice@example.com")
    assert info.state == DELIVERED and info.delivered_at is not None
    with pytest.raises(EscrowError, match="no longer pending"), manager.db.transaction() as session:
        manager.mark_delivered(session, "B1")
    with pytest.raises(EscrowError, match="no longer pending"), manager.db.transaction() as session:
        manager.mark_delivered(session, "UNKNOWN")


def test_a_revoked_record_cannot_be_delivered(manager: KeyManager) -> None:
    record(manager, "C1")
    with manager.db.transaction() as session:
        manager.mark_revoked(session, "C1")
    assert state_of(manager.db, "C1") == REVOKED
    with (
        pytest.raises(EscrowError, match="must not be delivered"),
        manager.db.transaction() as session,
    ):
        manager.mark_delivered(session, "C1")
    assert state_of(manager.db, "C1") == REVOKED


def test_a_serial_or_key_is_escrowed_once(manager: KeyManager) -> None:
    block = record(manager, "D1")
    add_certificate(manager.db, "D2")
    with (
        pytest.raises(StoreError),
        manager.db.transaction() as session,
    ):  # the same key again, under another serial
        manager.record(session, block, serial="D2", owner_email="alice@example.com")
    another = manager.new_key_pair("p256").block
    with (
        pytest.raises(StoreError),
        manager.db.transaction() as session,
    ):  # another key under the same serial
        manager.record(session, another, serial="D1", owner_email="alice@example.com")
    assert [i.serial for i in manager.escrowed()] == ["D1"]
    with pytest.raises(NotFoundError):
        manager.block_for(email="alice@example.com", serial="D2")
    with pytest.raises(NotFoundError):
        manager.block_for(email="bob@example.com")


def test_undelivered_respects_the_lease(manager: KeyManager) -> None:
    before = datetime.now(UTC)
    record(manager, "E1")
    record(manager, "E2", "bob@example.com")
    after = datetime.now(UTC)
    with manager.db.session() as session:
        assert manager.undelivered(session, older_than=after) == []  # leases still running
        assert manager.undelivered(session, older_than=before + LEASE) == []
        assert manager.undelivered(session, older_than=after + LEASE + timedelta(seconds=1)) == [
            "E1",
            "E2",
        ]
    with manager.db.transaction() as session:
        manager.mark_delivered(session, "E1")
    everything = datetime.max.replace(tzinfo=UTC)  # what reconcile --all-pending asks
    with manager.db.session() as session:
        assert manager.undelivered(session, older_than=everything) == ["E2"]
    with manager.db.transaction() as session:
        manager.mark_revoked(session, "E2")
    with manager.db.session() as session:
        assert manager.undelivered(session, older_than=everything) == []


def test_a_zero_lease_is_due_at_once(db: Database, transport: TransportKey) -> None:
    manager = KeyManager(db, transport, delivery_lease=timedelta(0))
    record(manager, "F1")
    with manager.db.session() as session:
        assert manager.undelivered(session, older_than=datetime.now(UTC)) == ["F1"]


def test_recover_opens_only_with_the_key_released_to_this_admin(
    manager: KeyManager, transport_private: rsa.RSAPrivateKey
) -> None:
    from mailpki.keystore.recovery_block import oaep, split_unwrapped

    pair = manager.new_key_pair("p256")
    add_certificate(manager.db, "E1")
    with manager.db.transaction() as session:
        manager.record(session, pair.block, serial="E1", owner_email="erin@example.com")
    # What the recovery service does: unwrap, then encrypt the AES key to the admin.
    aes_key, _ = split_unwrapped(
        transport_private.decrypt(pair.block.wrapped_key, oaep(pair.block.oaep_hash))
    )
    admin = KeyManager.new_admin_key()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    released = admin.public_key().encrypt(aes_key, oaep("sha256"))
    public = pair.private_key.public_key()
    kwargs = {"email": "erin@example.com", "serial": "E1", "certificate_public_key": public}
    key = manager.recover(encrypted_aes_key=released, admin_key=admin, **kwargs)  # type: ignore[arg-type]
    assert public_der(key) == public_der(pair.private_key)
    with pytest.raises(EscrowError, match="not encrypted to this admin"):
        manager.recover(encrypted_aes_key=released, admin_key=other, **kwargs)  # type: ignore[arg-type]
