"""FileKeyStore, key types and read_passphrase."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import pem as asn1_pem
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from mailpki.errors import InputError, KeyStoreError
from mailpki.keystore import keys as keys_mod
from mailpki.keystore.key_types import KEY_TYPES
from mailpki.keystore.keys import (
    FileKeyStore,
    KeyStore,
    generate_private_key,
    parse_key_type,
    read_passphrase,
)

PASS = b"correct horse battery staple"


@pytest.fixture
def store(tmp_path: Path) -> FileKeyStore:
    return FileKeyStore(tmp_path / "keys", PASS)


def _same_key(a: object, b: object) -> bool:
    assert isinstance(a, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    assert isinstance(b, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    numbers_a: object = a.private_numbers()
    return numbers_a == b.private_numbers()


# -- key types ---------------------------------------------------------------------


def test_key_types_listed() -> None:
    assert KEY_TYPES == ("rsa2048", "rsa3072", "rsa4096", "p256", "p384")


def test_parse_key_type_accepts_and_normalises() -> None:
    assert parse_key_type("p256") == "p256"
    assert parse_key_type(" RSA3072 ") == "rsa3072"


def test_parse_key_type_lists_choices() -> None:
    with pytest.raises(InputError, match="rsa2048, rsa3072, rsa4096, p256, p384"):
        parse_key_type("ed25519")


def test_generate_private_key_in_software() -> None:
    key = generate_private_key("p384")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP384R1)


# -- FileKeyStore -------------------------------------------------------------------


def test_file_store_is_a_keystore(store: FileKeyStore) -> None:
    assert isinstance(store, KeyStore)
    assert store.describe() == f"encrypted files in {store.directory}"
    assert "correct horse" not in repr(store)


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="passphrase"):
        FileKeyStore(tmp_path, b"")


@pytest.mark.parametrize("key_type", ["p256", "p384", "rsa2048"])
def test_roundtrip(store: FileKeyStore, key_type: str) -> None:
    kt = parse_key_type(key_type)
    key = store.generate("issuing-ca", kt)
    assert store.exists("issuing-ca")
    loaded = store.load("issuing-ca")
    assert type(loaded) is type(key)
    assert _same_key(key, loaded)
    assert keys_mod.key_type_of(loaded) == kt
    # A fresh store (new process) with the same passphrase reads it too.
    again = FileKeyStore(store.directory, PASS).load("issuing-ca")
    assert _same_key(key, again)


def test_file_and_dir_modes(store: FileKeyStore) -> None:
    store.generate("root", "p256")
    path = store.directory / "root.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    # Only the key file: no temp file left behind.
    assert sorted(p.name for p in store.directory.iterdir()) == ["root.pem"]


def test_at_rest_encryption_is_strong(store: FileKeyStore) -> None:
    store.generate("root", "p256")
    pem = (store.directory / "root.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    _, _, body = asn1_pem.unarmor(pem)
    info = asn1_keys.EncryptedPrivateKeyInfo.load(body)
    algo = info["encryption_algorithm"]
    assert algo["algorithm"].native == "pbes2"
    assert algo["parameters"]["encryption_scheme"]["algorithm"].native == "aes256_cbc"
    kdf = algo["parameters"]["key_derivation_func"]["parameters"]
    assert kdf["prf"]["algorithm"].native == "sha256"
    assert kdf["iteration_count"].native >= 600_000
    with pytest.raises(TypeError):  # not loadable without the passphrase
        serialization.load_pem_private_key(pem, password=None)


def test_generate_refuses_existing_label(store: FileKeyStore) -> None:
    store.generate("root", "p256")
    before = (store.directory / "root.pem").read_bytes()
    with pytest.raises(KeyStoreError, match="already exists"):
        store.generate("root", "p256")
    assert (store.directory / "root.pem").read_bytes() == before


def test_wrong_passphrase(store: FileKeyStore) -> None:
    store.generate("root", "p256")
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        FileKeyStore(store.directory, b"not the passphrase").load("root")


def test_load_missing(store: FileKeyStore) -> None:
    with pytest.raises(KeyStoreError, match="no key labelled 'nope'"):
        store.load("nope")
    assert not store.exists("nope")


def test_damaged_file(store: FileKeyStore) -> None:
    store.generate("root", "p256")
    (store.directory / "root.pem").write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nxx")
    with pytest.raises(KeyStoreError, match="cannot unlock"):
        store.load("root")


@pytest.mark.parametrize(
    "label", ["../x", "../../etc/passwd", "/abs", "a/b", "A", "", "a" * 65, "a.b", "x\n", ".."]
)
def test_label_validation(store: FileKeyStore, tmp_path: Path, label: str) -> None:
    for call in (
        lambda: store.generate(label, "p256"),
        lambda: store.load(label),
        lambda: store.exists(label),
        lambda: store.remove(label),
        lambda: store.import_pem(label, b"", PASS),
        lambda: store.export_pem(label, PASS),
    ):
        with pytest.raises(InputError, match="invalid key label"):
            call()
    assert not (tmp_path / "x.pem").exists()
    assert not store.directory.exists() or not any(store.directory.iterdir())


def test_label_boundaries(store: FileKeyStore) -> None:
    store.generate("a" * 64, "p256")
    store.generate("issuing-ca-2026", "p256")
    assert store.exists("a" * 64)


def test_remove(store: FileKeyStore) -> None:
    store.generate("root", "p256")
    store.remove("root")
    assert not store.exists("root")
    with pytest.raises(KeyStoreError, match="no key labelled"):
        store.remove("root")


def test_crash_during_write_leaves_no_key(
    store: FileKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", boom)
    with pytest.raises(KeyStoreError, match="No space left"):
        store.generate("root", "p256")
    monkeypatch.undo()
    assert not store.exists("root")
    assert list(store.directory.iterdir()) == []


def test_export_import_roundtrip(store: FileKeyStore, tmp_path: Path) -> None:
    key = store.generate("root", "p384")
    pem = store.export_pem("root", b"backup-pass")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    # The export is under the backup passphrase, not the store's.
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, password=PASS)
    other = FileKeyStore(tmp_path / "other", b"other store pass")
    imported = other.import_pem("restored", pem, b"backup-pass")
    assert _same_key(key, imported)
    assert _same_key(key, other.load("restored"))
    with pytest.raises(KeyStoreError, match="already exists"):
        other.import_pem("restored", pem, b"backup-pass")


def test_export_refuses_empty_passphrase(store: FileKeyStore) -> None:
    store.generate("root", "p256")
    with pytest.raises(KeyStoreError, match="empty passphrase"):
        store.export_pem("root", b"")


def test_import_unencrypted_pem_with_empty_passphrase(store: FileKeyStore) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert _same_key(key, store.import_pem("legacy", pem, b""))
    # ... and it is encrypted at rest once imported.
    assert b"ENCRYPTED PRIVATE KEY" in (store.directory / "legacy.pem").read_bytes()


def _self_signed_cert_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _encrypted(key: object, passphrase: bytes) -> bytes:
    assert hasattr(key, "private_bytes")
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


@pytest.mark.parametrize(
    ("pem", "passphrase", "message"),
    [
        (b"garbage", PASS, "not a PEM private key"),
        (b"", PASS, "not a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", b"", "PEM"),
        (_self_signed_cert_pem(), PASS, "not a private key"),
        (_encrypted(ec.generate_private_key(ec.SECP256R1()), b"right"), b"wrong", "wrong pass"),
        (_encrypted(ec.generate_private_key(ec.SECP256R1()), b"right"), b"", "is encrypted"),
        (_encrypted(ed25519.Ed25519PrivateKey.generate(), PASS), PASS, "cannot be a CA key"),
        (_encrypted(ec.generate_private_key(ec.SECP521R1()), PASS), PASS, "not supported"),
    ],
    ids=["garbage", "empty", "bad-der", "certificate", "wrong-pass", "no-pass", "ed25519", "p521"],
)
def test_import_refuses(store: FileKeyStore, pem: bytes, passphrase: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        store.import_pem("imported", pem, passphrase)
    assert not store.exists("imported")


# -- read_passphrase ------------------------------------------------------------------


def test_read_passphrase_from_file_strips_one_newline(tmp_path: Path) -> None:
    f = tmp_path / "pass"
    f.write_bytes(b"s3cret\n")
    assert read_passphrase(f, None) == b"s3cret"
    f.write_bytes(b"s3cret\n\n")
    assert read_passphrase(f, None) == b"s3cret\n"
    f.write_bytes(b"s3cret\r\n")
    assert read_passphrase(f, None) == b"s3cret"
    f.write_bytes(b" s3cret ")
    assert read_passphrase(f, None) == b" s3cret "


def test_read_passphrase_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILPKI_TEST_PASS", "from-env")
    assert read_passphrase(None, "MAILPKI_TEST_PASS") == b"from-env"


def test_read_passphrase_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "pass"
    f.write_bytes(b"from-file\n")
    monkeypatch.setenv("MAILPKI_TEST_PASS", "from-env")
    assert read_passphrase(f, "MAILPKI_TEST_PASS") == b"from-file"


def test_read_passphrase_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyStoreError, match="no key passphrase configured"):
        read_passphrase(None, None)
    with pytest.raises(KeyStoreError, match="cannot read"):
        read_passphrase(tmp_path / "missing", None)
    empty = tmp_path / "empty"
    empty.write_bytes(b"\n")
    with pytest.raises(KeyStoreError, match="is empty"):
        read_passphrase(empty, None)
    monkeypatch.delenv("MAILPKI_TEST_PASS", raising=False)
    with pytest.raises(KeyStoreError, match=r"MAILPKI_TEST_PASS.*not set"):
        read_passphrase(None, "MAILPKI_TEST_PASS")
    monkeypatch.setenv("MAILPKI_TEST_PASS", "")
    with pytest.raises(KeyStoreError, match=r"MAILPKI_TEST_PASS.*empty"):
        read_passphrase(None, "MAILPKI_TEST_PASS")


# -- key usage -----------------------------------------------------------------------


def test_generate_decrypt_usage_needs_rsa(store: FileKeyStore) -> None:
    with pytest.raises(InputError, match="p256 key cannot be a decryption key"):
        store.generate("transport", "p256", usage="decrypt")
    assert not store.exists("transport")


def test_generate_decrypt_usage_rsa(store: FileKeyStore) -> None:
    key = store.generate("transport", "rsa2048", usage="decrypt")
    assert isinstance(key, rsa.RSAPrivateKey)
    assert store.exists("transport")


def test_generate_unknown_usage(store: FileKeyStore) -> None:
    with pytest.raises(InputError, match="unknown key usage"):
        store.generate("x", "rsa2048", usage="wrap")  # type: ignore[arg-type]
    assert not store.exists("x")
