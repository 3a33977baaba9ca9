"""PKCS11KeyStore against a real SoftHSM2 token, checked with cryptography and openssl."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailpki.errors import InputError, KeyStoreError
from mailpki.keystore.keys import CAPrivateKey, KeyStore, parse_key_type, read_passphrase
from mailpki.keystore.pkcs11 import PKCS11ECPrivateKey, PKCS11KeyStore, PKCS11RSAPrivateKey
from tests.fixtures.ci_policy import in_ci
from tests.fixtures.softhsm import SoftHSMToken

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _label(prefix: str) -> str:
    # One token for the whole run: distinct labels keep tests independent.
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def store(softhsm_token: SoftHSMToken) -> Iterator[PKCS11KeyStore]:
    pin = read_passphrase(softhsm_token.pin_file, None)
    with PKCS11KeyStore(softhsm_token.module, softhsm_token.label, pin) as s:
        yield s


@pytest.fixture(scope="module")
def token_keys(softhsm_token: SoftHSMToken) -> Iterator[dict[str, tuple[str, CAPrivateKey]]]:
    """One RSA-3072 and one P-256 CA key, generated in the token once for the module."""
    s = PKCS11KeyStore(softhsm_token.module, softhsm_token.label, softhsm_token.pin.encode())
    made: dict[str, tuple[str, CAPrivateKey]] = {}
    for key_type in ("rsa3072", "p256"):
        label = _label(f"ca-{key_type}")
        made[key_type] = (label, s.generate(label, parse_key_type(key_type)))
    yield made
    s.close()


@pytest.fixture
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        if in_ci():
            pytest.fail("openssl is not installed")
        pytest.skip("openssl is not installed")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result


def _ca_cert(key: CAPrivateKey, rsa_padding: padding.PSS | None = None) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailpki test"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Token Root CA"),
        ]
    )
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return builder.sign(key, hashes.SHA256(), rsa_padding=rsa_padding)


def _leaf_cert(ca_key: CAPrivateKey, ca: x509.Certificate) -> x509.Certificate:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a@example.org")]))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("a@example.org")]), critical=False
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )


def _verify(public: object, signature: bytes, data: bytes, cert: x509.Certificate) -> None:
    algorithm = cert.signature_hash_algorithm
    assert algorithm is not None
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, padding.PKCS1v15(), algorithm)
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature, data, ec.ECDSA(algorithm))


def _pem(path: Path, obj: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize("key_type", ["rsa3072", "p256"])
def test_ca_cert_crl_and_ocsp_signed_in_token(
    token_keys: dict[str, tuple[str, CAPrivateKey]], key_type: str, tmp_path: Path, openssl: str
) -> None:
    _, key = token_keys[key_type]
    if key_type == "rsa3072":
        assert isinstance(key, PKCS11RSAPrivateKey)
        assert key.key_size == 3072
    else:
        assert isinstance(key, PKCS11ECPrivateKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert key.key_size == 256

    # 1. Self-signed CA certificate and a leaf it issues.
    ca = _ca_cert(key)
    ca.verify_directly_issued_by(ca)
    leaf = _leaf_cert(key, ca)
    leaf.verify_directly_issued_by(ca)

    # 2. A CRL revoking the leaf (built with the list in the constructor).
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(leaf.serial_number)
        .revocation_date(NOW - dt.timedelta(minutes=1))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder(revoked_certificates=[revoked])
        .issuer_name(ca.subject)
        .last_update(NOW - dt.timedelta(minutes=1))
        .next_update(NOW + dt.timedelta(days=7))
        .add_extension(x509.CRLNumber(1), critical=False)
        .sign(key, hashes.SHA256())
    )
    assert crl.is_signature_valid(key.public_key())

    # 3. An OCSP response for the leaf, signed by the CA itself.
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=ca,
            algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.REVOKED,
            this_update=NOW - dt.timedelta(minutes=1),
            next_update=NOW + dt.timedelta(hours=12),
            revocation_time=NOW - dt.timedelta(minutes=1),
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ca)
        .sign(key, hashes.SHA256())
    )
    _verify(key.public_key(), response.signature, response.tbs_response_bytes, ca)

    # 4. The real peer agrees.
    ca_pem = _pem(tmp_path / "ca.pem", ca)
    leaf_pem = _pem(tmp_path / "leaf.pem", leaf)
    crl_pem = _pem(tmp_path / "crl.pem", crl)
    resp_der = tmp_path / "resp.der"
    resp_der.write_bytes(response.public_bytes(serialization.Encoding.DER))
    _run(openssl, "verify", "-CAfile", str(ca_pem), str(ca_pem))
    _run(openssl, "verify", "-CAfile", str(ca_pem), str(leaf_pem))
    out = _run(openssl, "crl", "-in", str(crl_pem), "-CAfile", str(ca_pem), "-verify", "-noout")
    assert "verify OK" in out.stdout + out.stderr
    # With the CRL in force, the leaf no longer verifies.
    bad = subprocess.run(
        [openssl, "verify", "-crl_check", "-CAfile", str(ca_pem), "-CRLfile", str(crl_pem),
         str(leaf_pem)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "revoked" in (bad.stdout + bad.stderr)
    out = _run(
        openssl, "ocsp", "-respin", str(resp_der), "-CAfile", str(ca_pem),
        "-issuer", str(ca_pem), "-cert", str(leaf_pem), "-no_nonce",
    )  # fmt: skip
    assert "Response verify OK" in out.stdout + out.stderr
    assert "revoked" in out.stdout


def test_rsa_pss_and_prehashed_signatures(
    token_keys: dict[str, tuple[str, CAPrivateKey]], tmp_path: Path, openssl: str
) -> None:
    _, key = token_keys["rsa3072"]
    assert isinstance(key, rsa.RSAPrivateKey)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    ca = _ca_cert(key, rsa_padding=pss)
    ca.verify_directly_issued_by(ca)
    ca_pem = _pem(tmp_path / "ca-pss.pem", ca)
    _run(openssl, "verify", "-CAfile", str(ca_pem), str(ca_pem))

    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    public = key.public_key()
    data = b"to be signed"
    digest = hashes.Hash(hashes.SHA512())
    digest.update(data)
    prehashed = digest.finalize()
    # SoftHSM2 insists the MGF1 hash equals the message hash (ArgumentsBad otherwise).
    max_pss = padding.PSS(padding.MGF1(hashes.SHA512()), padding.PSS.MAX_LENGTH)
    for pad in (padding.PKCS1v15(), max_pss):
        sig = key.sign(prehashed, pad, Prehashed(hashes.SHA512()))
        public.verify(sig, data, pad, hashes.SHA512())

    _, ec_key = token_keys["p256"]
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    sig = ec_key.sign(prehashed, ec.ECDSA(Prehashed(hashes.SHA512())))
    ec_key.public_key().verify(sig, data, ec.ECDSA(hashes.SHA512()))


@pytest.mark.parametrize("key_type", ["rsa3072", "p256"])
def test_private_key_never_leaves_the_token(
    token_keys: dict[str, tuple[str, CAPrivateKey]], key_type: str, store: PKCS11KeyStore
) -> None:
    label, key = token_keys[key_type]
    with pytest.raises(KeyStoreError, match="not extractable"):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(KeyStoreError, match="lives in the PKCS#11 token"):
        key.private_numbers()
    if isinstance(key, rsa.RSAPrivateKey):
        with pytest.raises(KeyStoreError, match="lives in the PKCS#11 token"):
            key.decrypt(b"x" * 384, padding.PKCS1v15())
    else:
        with pytest.raises(KeyStoreError, match="lives in the PKCS#11 token"):
            key.exchange(ec.ECDH(), ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(KeyStoreError, match="back up the token instead"):
        store.export_pem(label, b"backup")
    with pytest.raises(KeyStoreError, match="back up the token instead"):
        store.import_pem(label, b"", b"")

    flags = store.key_attributes(label)
    assert flags["sensitive"] and flags["always_sensitive"]
    assert not flags["extractable"] and flags["never_extractable"]
    assert flags["local"] and flags["private"] and flags["sign"]
    assert not (flags["decrypt"] or flags["unwrap"] or flags["derive"])


def test_token_agrees_key_is_non_extractable(
    token_keys: dict[str, tuple[str, CAPrivateKey]], softhsm_token: SoftHSMToken
) -> None:
    # An independent reader of the token's attributes (OpenSC), when installed.
    tool = shutil.which("pkcs11-tool")
    if tool is None:
        pytest.skip("pkcs11-tool (opensc) is not installed")
    label, _ = token_keys["p256"]
    out = _run(
        tool, "--module", str(softhsm_token.module), "--token-label", softhsm_token.label,
        "--login", "--pin", softhsm_token.pin, "--list-objects", "--type", "privkey",
        "--label", label,
    ).stdout  # fmt: skip
    assert "never extractable" in out
    assert "sensitive" in out
    assert "Usage:      sign" in out


def test_second_store_finds_key_by_label(
    token_keys: dict[str, tuple[str, CAPrivateKey]], softhsm_token: SoftHSMToken
) -> None:
    label, key = token_keys["p256"]
    with PKCS11KeyStore(
        softhsm_token.module, softhsm_token.label, softhsm_token.pin.encode()
    ) as second:
        assert isinstance(second, KeyStore)
        assert second.exists(label)
        again = second.load(label)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(again, ec.EllipticCurvePrivateKey)
        assert again.public_key() == key.public_key()
        sig = again.sign(b"data", ec.ECDSA(hashes.SHA256()))
        key.public_key().verify(sig, b"data", ec.ECDSA(hashes.SHA256()))
    # Closing the second store must not log out the first (PKCS#11 login is per app).
    key.sign(b"still works", ec.ECDSA(hashes.SHA256()))


def test_wrong_pin(softhsm_token: SoftHSMToken, token_keys: object) -> None:
    # token_keys holds a store open: the PIN is checked against the shared session.
    with pytest.raises(KeyStoreError, match="wrong PIN"):
        PKCS11KeyStore(softhsm_token.module, softhsm_token.label, b"00000000")


def test_wrong_pin_fresh_login(softhsm_token: SoftHSMToken) -> None:
    # In this process a store may already hold the shared logged-in session, so the
    # PIN would be checked against that; a fresh process makes the token judge it.
    code = (
        "import sys; from pathlib import Path\n"
        "from mailpki.keystore.pkcs11 import PKCS11KeyStore\n"
        "from mailpki.errors import KeyStoreError\n"
        "try:\n"
        "    PKCS11KeyStore(Path(sys.argv[1]), sys.argv[2], sys.argv[3].encode())\n"
        "except KeyStoreError as exc:\n"
        "    print(exc); sys.exit(0)\n"
        "sys.exit('wrong PIN accepted')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(softhsm_token.module), softhsm_token.label, "00000000"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrong PIN" in result.stdout


def test_missing_token_and_module(softhsm_token: SoftHSMToken, tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="no PKCS#11 token labelled 'no-such-token'"):
        PKCS11KeyStore(softhsm_token.module, "no-such-token", b"1234")
    with pytest.raises(KeyStoreError, match="does not exist"):
        PKCS11KeyStore(tmp_path / "libnothere.so", softhsm_token.label, b"1234")
    not_a_module = tmp_path / "fake.so"
    not_a_module.write_bytes(b"not an ELF file")
    with pytest.raises(KeyStoreError, match="cannot load PKCS#11 module"):
        PKCS11KeyStore(not_a_module, softhsm_token.label, b"1234")


def test_generate_load_remove_lifecycle(store: PKCS11KeyStore, softhsm_token: SoftHSMToken) -> None:
    label = _label("tmp")
    assert store.describe() == (f"PKCS#11 token {softhsm_token.label!r} via {softhsm_token.module}")
    assert not store.exists(label)
    with pytest.raises(KeyStoreError, match="no key labelled"):
        store.load(label)
    key = store.generate(label, "p384")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP384R1)
    with pytest.raises(KeyStoreError, match="already exists"):
        store.generate(label, "p256")
    store.remove(label)
    assert not store.exists(label)
    with pytest.raises(KeyStoreError, match="no key labelled"):
        store.remove(label)
    with pytest.raises(InputError, match="invalid key label"):
        store.generate("../escape", "p256")


def test_closed_store_refuses(softhsm_token: SoftHSMToken) -> None:
    s = PKCS11KeyStore(softhsm_token.module, softhsm_token.label, softhsm_token.pin.encode())
    label = _label("closed")
    s.generate(label, "p256")
    s.remove(label)
    s.close()
    s.close()  # idempotent
    with pytest.raises(KeyStoreError, match="closed"):
        s.exists(label)


def test_concurrent_signing(token_keys: dict[str, tuple[str, CAPrivateKey]]) -> None:
    _, key = token_keys["p256"]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    public = key.public_key()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                data = f"{n}-{i}".encode()
                sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
                public.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
