"""PKCS#12 build/load: round trips, modern vs legacy encodings, and hostile input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import math
import os
import re
import time

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import keys as asn1_keys
from asn1crypto import pkcs12 as asn1_pkcs12
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12 as crypto_pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailpki.errors import MailPKIError, PKCS12Error
from mailpki.keymanager.pkcs12 import (
    PKCS12_KDF_ROUNDS,
    PKCS12_LEGACY_KDF_ROUNDS,
    PKCS12_MAX_KDF_ROUNDS,
    PKCS12_MAX_SIZE,
    READABLE_ALPHABET,
    LoadedPKCS12,
    PKCS12Key,
    build_pkcs12,
    generate_password,
    load_pkcs12,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
PASSWORD = b"k7Qm2-Xp4vd-9RtbH-eW3nz"
WRONG = "wrong PKCS#12 password, or not a PKCS#12 file"


# -- certificates ------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailpki test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ca(
    cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, PKCS12Key] | None
) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (_name(cn), key)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def _leaf(key: PKCS12Key, issuing: x509.Certificate, ca_key: PKCS12Key) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Alice Example")]))
        .issuer_name(issuing.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("alice@example.org")]), critical=False
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


class Chain:
    """A root, an issuing CA, and a way to issue leaf certificates under them."""

    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _ca("Test Root", self.root_key, None)
        self.issuing_key = ec.generate_private_key(ec.SECP256R1())
        self.issuing = _ca("Test Issuing CA", self.issuing_key, (self.root.subject, self.root_key))

    def leaf(self, key: PKCS12Key) -> x509.Certificate:
        return _leaf(key, self.issuing, self.issuing_key)

    @property
    def cas(self) -> list[x509.Certificate]:
        return [self.issuing, self.root]


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chain()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def legacy_p12(chain: Chain, rsa_key: rsa.RSAPrivateKey) -> bytes:
    return build_pkcs12(
        rsa_key, chain.leaf(rsa_key), chain.cas, PASSWORD, friendly_name="Alice", legacy=True
    )


@pytest.fixture(scope="module")
def modern_p12(chain: Chain, rsa_key: rsa.RSAPrivateKey) -> bytes:
    return build_pkcs12(rsa_key, chain.leaf(rsa_key), chain.cas, PASSWORD, friendly_name="Alice")


def _private_der(key: PKCS12Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- generate_password -------------------------------------------------------------------


def test_password_shape_and_alphabet() -> None:
    assert not set("0Oo1lI") & set(READABLE_ALPHABET)
    assert len(set(READABLE_ALPHABET)) == len(READABLE_ALPHABET) == 56
    symbol = f"[{re.escape(READABLE_ALPHABET)}]"
    pattern = re.compile(rf"{symbol}{{5}}(-{symbol}{{5}}){{3}}")
    for _ in range(200):
        password = generate_password()
        assert pattern.fullmatch(password), password


def test_password_entropy_and_uniqueness() -> None:
    passwords = [generate_password() for _ in range(2000)]
    assert len(set(passwords)) == len(passwords)
    symbols = "".join(p.replace("-", "") for p in passwords)
    # 40,000 draws from 56 symbols (~714 each): every symbol shows up, none dominates.
    counts = {c: symbols.count(c) for c in READABLE_ALPHABET}
    assert min(counts.values()) > 400 and max(counts.values()) < 1000
    assert 20 * math.log2(len(READABLE_ALPHABET)) > 116


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["modern", "legacy"])
@pytest.mark.parametrize("kind", ["rsa2048", "p256"])
def test_round_trip(
    chain: Chain,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    kind: str,
    legacy: bool,
) -> None:
    key: PKCS12Key = rsa_key if kind == "rsa2048" else ec_key
    leaf = chain.leaf(key)
    data = build_pkcs12(
        key, leaf, chain.cas, PASSWORD, friendly_name="Alice Example", legacy=legacy
    )
    loaded = load_pkcs12(data, PASSWORD)
    assert isinstance(loaded, LoadedPKCS12)
    assert isinstance(
        loaded.key, rsa.RSAPrivateKey if kind == "rsa2048" else ec.EllipticCurvePrivateKey
    )
    assert _private_der(loaded.key) == _private_der(key)
    assert loaded.certificate == leaf
    assert loaded.chain == (chain.issuing, chain.root)  # issuing CA first, root last
    assert loaded.friendly_name == "Alice Example"
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.friendly_name = "x"  # type: ignore[misc]


def test_non_ascii_friendly_name_and_empty_chain(
    chain: Chain, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    name = "Jürgen Müller – Verschlüsselung 2026"
    data = build_pkcs12(ec_key, chain.leaf(ec_key), [], PASSWORD, friendly_name=name)
    loaded = load_pkcs12(data, PASSWORD)
    assert loaded.friendly_name == name
    assert loaded.chain == ()


def test_bytearray_input_and_password(modern_p12: bytes) -> None:
    loaded = load_pkcs12(bytearray(modern_p12), bytearray(PASSWORD))  # type: ignore[arg-type]
    assert loaded.friendly_name == "Alice"


def test_modern_and_legacy_encodings_differ(modern_p12: bytes, legacy_p12: bytes) -> None:
    def describe(data: bytes) -> dict[str, object]:
        pfx = asn1_pkcs12.Pfx.load(data)
        mac = pfx["mac_data"]
        found: dict[str, object] = {
            "mac": mac["mac"]["digest_algorithm"]["algorithm"].native,
            "mac_rounds": mac["iterations"].native,
        }
        for info in pfx.authenticated_safe:
            if info["content_type"].native == "encrypted_data":
                algorithm = info["content"]["encrypted_content_info"][
                    "content_encryption_algorithm"
                ]
                found["certs"] = algorithm["algorithm"].native
                found["certs_cipher"] = algorithm.encryption_cipher
                found["certs_rounds"] = algorithm.kdf_iterations
            else:
                for bag in asn1_pkcs12.SafeContents.load(info["content"].native):
                    assert bag["bag_id"].native == "pkcs8_shrouded_key_bag"
                    algorithm = bag["bag_value"]["encryption_algorithm"]
                    found["key"] = algorithm["algorithm"].native
                    found["key_cipher"] = algorithm.encryption_cipher
                    found["key_rounds"] = algorithm.kdf_iterations
                    if algorithm["algorithm"].native == "pbes2":
                        found["key_prf"] = algorithm["parameters"]["key_derivation_func"][
                            "parameters"
                        ]["prf"]["algorithm"].native
        return found

    modern = describe(modern_p12)
    legacy = describe(legacy_p12)
    assert modern["mac"] == "sha256" and legacy["mac"] == "sha1"
    assert modern["key"] == modern["certs"] == "pbes2"
    assert modern["key_cipher"] == modern["certs_cipher"] == "aes"
    assert modern["key_prf"] == "sha256"
    assert modern["key_rounds"] == modern["certs_rounds"] == PKCS12_KDF_ROUNDS
    assert legacy["key"] == legacy["certs"] == "pkcs12_sha1_tripledes_3key"
    assert legacy["key_rounds"] == legacy["certs_rounds"] == PKCS12_LEGACY_KDF_ROUNDS
    # cryptography 50 writes the MAC with 2,048 rounds whatever kdf_rounds says
    # (pyca/cryptography#9644); the module docstring explains why that is acceptable.
    assert modern["mac_rounds"] == legacy["mac_rounds"] == 2048


def test_modern_build_cost_is_bounded(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    # PKCS12_KDF_ROUNDS was chosen for ~130 ms here; a generous bound catches a typo
    # (an extra zero) without making the test flaky on a slow CI machine.
    leaf = chain.leaf(ec_key)
    start = time.perf_counter()
    build_pkcs12(ec_key, leaf, chain.cas, PASSWORD, friendly_name="Alice")
    assert time.perf_counter() - start < 2.0


# -- build refuses -----------------------------------------------------------------------


def test_build_refuses_empty_password(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(MailPKIError, match="empty password"):
        build_pkcs12(ec_key, chain.leaf(ec_key), chain.cas, b"", friendly_name="Alice")


def test_build_refuses_empty_friendly_name(
    chain: Chain, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(MailPKIError, match="friendly name"):
        build_pkcs12(ec_key, chain.leaf(ec_key), chain.cas, PASSWORD, friendly_name="")


@pytest.mark.parametrize("legacy", [False, True], ids=["modern", "legacy"])
def test_build_refuses_mismatched_key(
    chain: Chain, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, legacy: bool
) -> None:
    other_ec = ec.generate_private_key(ec.SECP256R1())
    for key, cert in ((other_ec, chain.leaf(ec_key)), (rsa_key, chain.leaf(ec_key))):
        with pytest.raises(MailPKIError) as info:
            build_pkcs12(key, cert, chain.cas, PASSWORD, friendly_name="Alice", legacy=legacy)
        assert type(info.value) is MailPKIError  # a programming error, not bad input
        assert str(info.value) == "the private key does not match the certificate"


def test_build_refuses_other_key_types(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(MailPKIError, match="only RSA and EC"):
        build_pkcs12(
            ed25519.Ed25519PrivateKey.generate(),  # type: ignore[arg-type]
            chain.leaf(ec_key),
            [],
            PASSWORD,
            friendly_name="Alice",
        )


# -- load refuses ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["modern", "legacy"])
def test_wrong_password(which: str, modern_p12: bytes, legacy_p12: bytes) -> None:
    data = modern_p12 if which == "modern" else legacy_p12
    for password in (b"k7Qm2-Xp4vd-9RtbH-eW3nZ", b"x", PASSWORD + b"\n"):
        with pytest.raises(PKCS12Error) as info:
            load_pkcs12(data, password)
        assert str(info.value) == WRONG


def test_empty_password_refused(modern_p12: bytes) -> None:
    with pytest.raises(PKCS12Error, match="give the password"):
        load_pkcs12(modern_p12, b"")


def test_truncated(legacy_p12: bytes, modern_p12: bytes) -> None:
    for data in (legacy_p12, modern_p12):
        for size in (0, 1, 2, 16, len(data) // 2, len(data) - 1):
            with pytest.raises(PKCS12Error) as info:
                load_pkcs12(data[:size], PASSWORD)
            assert "\n" not in str(info.value)


def test_oversize_refused_before_parsing(modern_p12: bytes) -> None:
    with pytest.raises(PKCS12Error, match=f"at most {PKCS12_MAX_SIZE}"):
        load_pkcs12(modern_p12 + b"\x00" * PKCS12_MAX_SIZE, PASSWORD)
    with pytest.raises(PKCS12Error, match="at most"):
        load_pkcs12(b"\x30" * (PKCS12_MAX_SIZE + 1), PASSWORD)


def test_not_bytes_refused() -> None:
    with pytest.raises(PKCS12Error, match="bytes"):
        load_pkcs12("not bytes", PASSWORD)  # type: ignore[arg-type]


def test_pem_and_other_der_refused(chain: Chain) -> None:
    for data in (
        chain.root.public_bytes(serialization.Encoding.PEM),
        chain.root.public_bytes(serialization.Encoding.DER),
        b"-----BEGIN PKCS12-----\n",
    ):
        with pytest.raises(PKCS12Error) as info:
            load_pkcs12(data, PASSWORD)
        assert str(info.value) == WRONG


def test_huge_iteration_count_refused_before_any_kdf(legacy_p12: bytes) -> None:
    pfx = asn1_pkcs12.Pfx.load(legacy_p12)
    pfx["mac_data"]["iterations"] = 2**31 - 1
    data = pfx.dump(force=True)
    start = time.perf_counter()
    with pytest.raises(PKCS12Error, match=f"at most {PKCS12_MAX_KDF_ROUNDS} are accepted"):
        load_pkcs12(data, PASSWORD)
    assert time.perf_counter() - start < 1.0


def test_without_key(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    enc = serialization.BestAvailableEncryption(PASSWORD)
    data = crypto_pkcs12.serialize_key_and_certificates(
        b"Alice", None, chain.leaf(ec_key), chain.cas, enc
    )
    with pytest.raises(PKCS12Error, match="holds no private key"):
        load_pkcs12(data, PASSWORD)


def test_without_certificate(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    enc = serialization.BestAvailableEncryption(PASSWORD)
    for cas in (None, chain.cas):  # CA certificates do not count as the key's certificate
        data = crypto_pkcs12.serialize_key_and_certificates(b"Alice", ec_key, None, cas, enc)
        with pytest.raises(PKCS12Error, match="holds no certificate for its private key"):
            load_pkcs12(data, PASSWORD)


def test_certificate_found_without_local_key_id(
    chain: Chain, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # Some exporters put the end-entity certificate among the others, unmarked.
    leaf = chain.leaf(ec_key)
    enc = serialization.BestAvailableEncryption(PASSWORD)
    data = crypto_pkcs12.serialize_key_and_certificates(
        None, ec_key, None, [chain.issuing, leaf, chain.root], enc
    )
    loaded = load_pkcs12(data, PASSWORD)
    assert loaded.certificate == leaf
    assert loaded.chain == (chain.issuing, chain.root)
    assert loaded.friendly_name is None


def test_unsupported_key_type(chain: Chain) -> None:
    enc = serialization.BestAvailableEncryption(PASSWORD)
    data = crypto_pkcs12.serialize_key_and_certificates(
        b"x", ed25519.Ed25519PrivateKey.generate(), None, None, enc
    )
    with pytest.raises(PKCS12Error, match="only RSA and EC keys"):
        load_pkcs12(data, PASSWORD)


# A PFX made by hand, since cryptography (rightly) refuses to write a key with a
# certificate that does not belong to it: plain keyBag + certBag, SHA-256 MAC.


def _pkcs12_mac_key(password: bytes, salt: bytes, rounds: int) -> bytes:
    # RFC 7292 appendix B.2 with SHA-256 (u=32, v=64), ID 3 (MAC key), 32 bytes out.
    v = 64
    bmp = (password.decode() + "\0").encode("utf-16-be")
    s = (salt * (v // len(salt) + 1))[: v * -(-len(salt) // v)]
    p = (bmp * (v // len(bmp) + 1))[: v * -(-len(bmp) // v)]
    a = hashlib.sha256(bytes([3]) * v + s + p).digest()
    for _ in range(rounds - 1):
        a = hashlib.sha256(a).digest()
    return a


def _forged_pfx(key: PKCS12Key, cert: x509.Certificate, password: bytes) -> bytes:
    key_id = asn1_pkcs12.Attributes([{"type": "local_key_id", "values": [b"\x01"]}])
    bags = asn1_pkcs12.SafeContents(
        [
            {
                "bag_id": "key_bag",
                "bag_value": asn1_keys.PrivateKeyInfo.load(_private_der(key)),
                "bag_attributes": key_id,
            },
            {
                "bag_id": "cert_bag",
                "bag_value": {
                    "cert_id": "x509",
                    "cert_value": asn1_x509.Certificate.load(
                        cert.public_bytes(serialization.Encoding.DER)
                    ),
                },
                "bag_attributes": key_id,
            },
        ]
    )
    safe = asn1_pkcs12.AuthenticatedSafe(
        [asn1_cms.ContentInfo({"content_type": "data", "content": bags.dump()})]
    )
    safe_der = safe.dump()
    salt = os.urandom(8)
    mac = hmac.new(_pkcs12_mac_key(password, salt, 1), safe_der, "sha256").digest()
    pfx = asn1_pkcs12.Pfx(
        {
            "version": "v3",
            "auth_safe": {"content_type": "data", "content": safe_der},
            "mac_data": {
                "mac": {"digest_algorithm": {"algorithm": "sha256"}, "digest": mac},
                "mac_salt": salt,
                "iterations": 1,
            },
        }
    )
    der: bytes = pfx.dump()
    return der


def test_forged_pfx_helper_is_valid(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = chain.leaf(ec_key)
    loaded = load_pkcs12(_forged_pfx(ec_key, leaf, PASSWORD), PASSWORD)
    assert loaded.certificate == leaf


def test_mismatched_key_refused_on_load(
    chain: Chain, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    # OpenSSL's parser pairs key and certificate by public key, not only by
    # localKeyId, so the stranger certificate is simply not the key's certificate.
    leaf = chain.leaf(ec_key)
    for other in (ec.generate_private_key(ec.SECP256R1()), rsa_key):
        with pytest.raises(PKCS12Error, match="holds no certificate for its private key"):
            load_pkcs12(_forged_pfx(other, leaf, PASSWORD), PASSWORD)


# -- hostile bytes -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=4096))
def test_random_bytes_only_raise_pkcs12_error(data: bytes) -> None:
    with pytest.raises(PKCS12Error) as info:
        load_pkcs12(data, PASSWORD)
    assert "\n" not in str(info.value)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    which=st.sampled_from(["modern", "legacy"]),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=4,
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_mutated_files_only_raise_pkcs12_error(
    modern_p12: bytes,
    legacy_p12: bytes,
    which: str,
    edits: list[tuple[int, int]],
    cut: int | None,
) -> None:
    data = bytearray(modern_p12 if which == "modern" else legacy_p12)
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    try:
        loaded = load_pkcs12(bytes(data), PASSWORD)
    except PKCS12Error as exc:
        assert "\n" not in str(exc)
    else:
        # A byte outside what the MAC covers (the version, say) may change harmlessly.
        assert loaded.certificate.public_key() == loaded.key.public_key()


def test_mismatch_guard_behind_the_parser(
    chain: Chain,
    ec_key: ec.EllipticCurvePrivateKey,
    modern_p12: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Should a future parser hand back a key with someone else's certificate.
    stranger = crypto_pkcs12.PKCS12KeyAndCertificates(
        ec.generate_private_key(ec.SECP256R1()),
        crypto_pkcs12.PKCS12Certificate(chain.leaf(ec_key), b"Alice"),
        [],
    )
    monkeypatch.setattr(crypto_pkcs12, "load_pkcs12", lambda data, password: stranger)
    with pytest.raises(PKCS12Error, match="private key in the PKCS#12 file does not match"):
        load_pkcs12(modern_p12, PASSWORD)


def test_unexpected_parser_exception_is_wrapped(
    modern_p12: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(data: bytes, password: bytes) -> None:
        raise OverflowError("odd input")

    monkeypatch.setattr(crypto_pkcs12, "load_pkcs12", explode)
    with pytest.raises(PKCS12Error, match="cannot read the PKCS#12 file: OverflowError"):
        load_pkcs12(modern_p12, PASSWORD)
