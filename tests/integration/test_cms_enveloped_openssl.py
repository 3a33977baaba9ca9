"""CMS EnvelopedData / AuthEnvelopedData interop with the real `openssl cms`, both ways.

`encrypt()` writes and `openssl cms -decrypt` reads (AES-CBC and AES-GCM, PKCS#1
v1.5 and RSA-OAEP, several recipients); `openssl cms -encrypt` writes (AES-CBC/GCM,
3DES, OAEP with SHA-1 and SHA-256, streamed BER, PEM, several recipients,
subjectKeyIdentifier recipients) and `decrypt()` reads.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailpki.cms.enveloped import decrypt, encrypt
from mailpki.errors import CMSError
from tests.fixtures.cms_tools import OPENSSL, openssl, write_key_and_cert

pytestmark = pytest.mark.integration

if not OPENSSL:  # pragma: no cover - the CI test command installs it
    pytest.skip("openssl is not installed", allow_module_level=True)

CONTENT = b"Content-Type: text/plain\r\n\r\nescrow PIN 4711\r\nsecond line\n\x00\xff binary tail"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Recipient:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    key_path: Path
    cert_path: Path


def recipient_cert(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, cn: str
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailpki test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # keyEncipherment for RSA, keyAgreement for EC.
            x509.KeyUsage(
                False,
                False,
                isinstance(key, rsa.RSAPrivateKey),
                False,
                isinstance(key, ec.EllipticCurvePrivateKey),
                False,
                False,
                False,
                False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(f"{cn}@example.com")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cms-enveloped")
    (path / "content.bin").write_bytes(CONTENT)
    (path / "big.bin").write_bytes(os.urandom(300_000))
    return path


@pytest.fixture(scope="module")
def people(workdir: Path) -> dict[str, Recipient]:
    keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = {
        name: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for name in ("alice", "bob", "carol")
    }
    keys["erin"] = ec.generate_private_key(ec.SECP256R1())
    keys["frank"] = ec.generate_private_key(ec.SECP384R1())
    result = {}
    for name, key in keys.items():
        cert = recipient_cert(key, name)
        key_path, cert_path = write_key_and_cert(workdir, name, key, cert)
        result[name] = Recipient(key, cert, key_path, cert_path)
    return result


def openssl_decrypt(tmp_path: Path, message: bytes, who: Recipient, inform: str = "DER") -> bytes:
    (tmp_path / "in.cms").write_bytes(message)
    done = openssl(
        "cms",
        "-decrypt",
        "-binary",
        "-inform",
        inform,
        "-in",
        tmp_path / "in.cms",
        "-recip",
        who.cert_path,
        "-inkey",
        who.key_path,
        "-out",
        tmp_path / "out.bin",
    )
    assert done.returncode == 0, done.stderr.decode()
    return (tmp_path / "out.bin").read_bytes()


def openssl_encrypt(
    tmp_path: Path,
    recipients: list[tuple[Recipient, list[str]]],
    *options: str,
    content: Path | None = None,
    outform: str = "DER",
) -> bytes:
    """`openssl cms -encrypt`; each recipient with its own -keyopt options."""
    args: list[str | Path] = []
    for who, keyopts in recipients:
        args += ["-recip", who.cert_path]
        for keyopt in keyopts:
            args += ["-keyopt", keyopt]
    out = tmp_path / "enc.cms"
    done = openssl(
        "cms",
        "-encrypt",
        "-binary",
        "-in",
        content or tmp_path / "content.bin",
        "-outform",
        outform,
        "-out",
        out,
        *options,
        *args,
    )
    assert done.returncode == 0, done.stderr.decode()
    return out.read_bytes()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A per-test directory for openssl's files (safe under xdist), with content.bin."""
    (tmp_path / "content.bin").write_bytes(CONTENT)
    return tmp_path


def test_openssl_version_is_known() -> None:
    done = openssl("version")
    assert done.returncode == 0
    assert done.stdout.startswith(b"OpenSSL 3."), done.stdout  # AuthEnvelopedData needs 3.0+


# --- encrypt() writes, openssl decrypts ---


@pytest.mark.parametrize(
    ("cipher", "transport"),
    [
        ("aes256-cbc", "pkcs1v15"),
        ("aes256-cbc", "oaep"),
        ("aes128-cbc", "pkcs1v15"),
        ("aes256-gcm", "pkcs1v15"),
        ("aes256-gcm", "oaep"),
    ],
)
def test_openssl_decrypts_ours(
    out: Path, people: dict[str, Recipient], cipher: str, transport: str
) -> None:
    message = encrypt(CONTENT, [people["alice"].cert], cipher=cipher, key_transport=transport)  # type: ignore[arg-type]
    assert openssl_decrypt(out, message, people["alice"]) == CONTENT


def test_openssl_decrypts_ours_for_each_recipient(out: Path, people: dict[str, Recipient]) -> None:
    content = os.urandom(100_000)
    certs = [p.cert for p in people.values()]  # RSA and EC
    for cipher in ("aes256-cbc", "aes256-gcm"):
        message = encrypt(content, certs, cipher=cipher, key_transport="oaep")
        for who in people.values():
            assert openssl_decrypt(out, message, who) == content


def test_openssl_refuses_ours_for_someone_else(out: Path, people: dict[str, Recipient]) -> None:
    message = encrypt(CONTENT, [people["alice"].cert, people["bob"].cert])
    (out / "in.cms").write_bytes(message)
    done = openssl(
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        out / "in.cms",
        "-recip",
        people["carol"].cert_path,
        "-inkey",
        people["carol"].key_path,
    )
    assert done.returncode != 0


# --- openssl encrypts, decrypt() reads ---


@pytest.mark.parametrize(
    ("options", "keyopts", "cipher", "transport"),
    [
        (["-aes-256-cbc"], [], "aes256-cbc", "pkcs1v15"),
        (["-aes-128-cbc"], [], "aes128-cbc", "pkcs1v15"),
        (["-aes-192-cbc"], [], "aes192-cbc", "pkcs1v15"),
        (["-aes-256-cbc"], ["rsa_padding_mode:oaep"], "aes256-cbc", "oaep"),
        (
            ["-aes-256-cbc"],
            ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
            "aes256-cbc",
            "oaep",
        ),
        (
            ["-aes-256-cbc"],
            ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256", "rsa_mgf1_md:sha256"],
            "aes256-cbc",
            "oaep",
        ),
        (["-aes-256-gcm"], [], "aes256-gcm", "pkcs1v15"),
        (["-aes-128-gcm"], [], "aes128-gcm", "pkcs1v15"),
        (
            ["-aes-256-gcm"],
            ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
            "aes256-gcm",
            "oaep",
        ),
        (["-des3"], [], "des-ede3-cbc", "pkcs1v15"),
        (["-aes-256-cbc", "-keyid"], [], "aes256-cbc", "pkcs1v15"),
        (["-aes-256-gcm", "-keyid"], ["rsa_padding_mode:oaep"], "aes256-gcm", "oaep"),
    ],
    ids=[
        "aes256-cbc",
        "aes128-cbc",
        "aes192-cbc",
        "oaep-sha1",
        "oaep-sha256",
        "oaep-sha256-mgf1-sha256",
        "aes256-gcm",
        "aes128-gcm",
        "gcm-oaep-sha256",
        "des3",
        "keyid",
        "gcm-keyid-oaep",
    ],
)
def test_we_decrypt_openssl_der(
    out: Path,
    people: dict[str, Recipient],
    options: list[str],
    keyopts: list[str],
    cipher: str,
    transport: str,
) -> None:
    alice = people["alice"]
    message = openssl_encrypt(out, [(alice, keyopts)], *options)
    result = decrypt(message, alice.cert, alice.key)
    assert (result.content, result.cipher, result.key_transport, result.recipient_count) == (
        CONTENT,
        cipher,
        transport,
        1,
    )
    if "-keyid" in options:
        rid = cms.ContentInfo.load(message)["content"]["recipient_infos"][0].chosen["rid"]
        assert rid.name == "subject_key_identifier"


def test_openssl_oaep_sha256_parameters(out: Path, people: dict[str, Recipient]) -> None:
    alice = people["alice"]
    message = openssl_encrypt(
        out, [(alice, ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"])], "-aes-256-cbc"
    )
    kea = cms.ContentInfo.load(message)["content"]["recipient_infos"][0].chosen[
        "key_encryption_algorithm"
    ]
    assert kea["algorithm"].native == "rsaes_oaep"
    assert kea["parameters"]["hash_algorithm"]["algorithm"].native == "sha256"
    # A callable (as a token would be) is asked for exactly that padding.
    seen: list[AsymmetricPadding] = []

    def token(ciphertext: bytes, pad: AsymmetricPadding) -> bytes:
        seen.append(pad)
        assert isinstance(alice.key, rsa.RSAPrivateKey)
        return alice.key.decrypt(ciphertext, pad)

    assert decrypt(message, alice.cert, token).content == CONTENT
    (used,) = seen
    assert isinstance(alice.key, rsa.RSAPrivateKey)
    assert isinstance(used, padding.OAEP)
    assert used.algorithm.name == "sha256"


@pytest.mark.parametrize("cipher_option", ["-aes-256-cbc", "-aes-256-gcm", "-des3"])
@pytest.mark.parametrize("outform", ["DER", "PEM"])
def test_we_decrypt_openssl_streamed(
    out: Path,
    workdir: Path,
    people: dict[str, Recipient],
    cipher_option: str,
    outform: str,
) -> None:
    alice = people["alice"]
    big = workdir / "big.bin"
    message = openssl_encrypt(
        out, [(alice, [])], cipher_option, "-stream", content=big, outform=outform
    )
    if outform == "DER":
        assert message[1] == 0x80  # indefinite length: BER
    else:
        assert message.startswith(b"-----BEGIN CMS-----")
    result = decrypt(message, alice.cert, alice.key)
    assert result.content == big.read_bytes()


def test_we_decrypt_openssl_pem(out: Path, people: dict[str, Recipient]) -> None:
    alice = people["alice"]
    message = openssl_encrypt(out, [(alice, [])], "-aes-256-gcm", outform="PEM")
    assert message.startswith(b"-----BEGIN CMS-----")
    assert decrypt(message, alice.cert, alice.key).content == CONTENT


def test_we_decrypt_openssl_several_recipients(out: Path, people: dict[str, Recipient]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    message = openssl_encrypt(
        out,
        [(alice, []), (bob, ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"]), (carol, [])],
        "-aes-256-gcm",
        "-stream",
    )
    for who, transport in [(alice, "pkcs1v15"), (bob, "oaep"), (carol, "pkcs1v15")]:
        result = decrypt(message, who.cert, who.key)
        assert (result.content, result.key_transport, result.recipient_count) == (
            CONTENT,
            transport,
            3,
        )


def test_openssl_message_for_someone_else(out: Path, people: dict[str, Recipient]) -> None:
    message = openssl_encrypt(out, [(people["alice"], []), (people["bob"], [])], "-aes-256-cbc")
    with pytest.raises(CMSError, match="not for this recipient"):
        decrypt(message, people["carol"].cert, people["carol"].key)


def test_openssl_message_tampered(out: Path, people: dict[str, Recipient]) -> None:
    alice = people["alice"]
    message = bytearray(openssl_encrypt(out, [(alice, [])], "-aes-256-gcm"))
    message[-20] ^= 0x01  # inside the last ciphertext bytes or the tag
    with pytest.raises(CMSError, match="^the message cannot be decrypted with this key$"):
        decrypt(bytes(message), alice.cert, alice.key)


def test_round_trip_through_openssl(out: Path, people: dict[str, Recipient]) -> None:
    """Ours -> openssl decrypts -> openssl re-encrypts streamed -> we decrypt."""
    alice, bob = people["alice"], people["bob"]
    ours = encrypt(CONTENT, [alice.cert, bob.cert], cipher="aes256-gcm", key_transport="oaep")
    plain = openssl_decrypt(out, ours, bob)
    content = out / "plain.bin"
    content.write_bytes(plain)
    theirs = openssl_encrypt(
        out, [(alice, ["rsa_padding_mode:oaep"])], "-aes-128-gcm", "-stream", content=content
    )
    assert decrypt(theirs, alice.cert, alice.key).content == CONTENT


# --- EC recipients (ECDH key agreement), both ways ---


@pytest.mark.parametrize("name", ["erin", "frank"])
@pytest.mark.parametrize("cipher", ["aes256-cbc", "aes128-cbc", "aes256-gcm"])
def test_openssl_decrypts_ours_ec(
    out: Path, people: dict[str, Recipient], cipher: str, name: str
) -> None:
    message = encrypt(CONTENT, [people["alice"].cert, people[name].cert], cipher=cipher)  # type: ignore[arg-type]
    assert openssl_decrypt(out, message, people[name]) == CONTENT
    assert openssl_decrypt(out, message, people["alice"]) == CONTENT


@pytest.mark.parametrize(
    ("name", "options", "keyopts", "cipher"),
    [
        ("erin", ["-aes-256-cbc"], [], "aes256-cbc"),  # OpenSSL's default: sha1kdf
        ("erin", ["-aes-128-cbc"], [], "aes128-cbc"),  # aes128-wrap
        ("erin", ["-aes-256-gcm"], ["ecdh_kdf_md:sha256"], "aes256-gcm"),
        ("erin", ["-aes-256-cbc"], ["ecdh_kdf_md:sha512"], "aes256-cbc"),
        ("erin", ["-aes-256-cbc"], ["ecdh_cofactor_mode:1"], "aes256-cbc"),
        ("erin", ["-aes-256-cbc", "-keyid"], [], "aes256-cbc"),
        ("erin", ["-aes-256-gcm", "-stream"], [], "aes256-gcm"),
        ("frank", ["-aes-256-cbc"], ["ecdh_kdf_md:sha384"], "aes256-cbc"),
        ("frank", ["-aes-256-gcm", "-stream"], [], "aes256-gcm"),
    ],
    ids=[
        "p256-sha1kdf",
        "p256-aes128",
        "p256-gcm-sha256kdf",
        "p256-sha512kdf",
        "p256-cofactor",
        "p256-keyid",
        "p256-gcm-stream",
        "p384-sha384kdf",
        "p384-gcm-stream",
    ],
)
def test_we_decrypt_openssl_ec(
    out: Path,
    people: dict[str, Recipient],
    name: str,
    options: list[str],
    keyopts: list[str],
    cipher: str,
) -> None:
    who = people[name]
    message = openssl_encrypt(out, [(people["bob"], []), (who, keyopts)], *options)
    result = decrypt(message, who.cert, who.key)
    assert (result.content, result.cipher, result.key_transport, result.recipient_count) == (
        CONTENT,
        cipher,
        "ecdh",
        2,
    )
    assert decrypt(message, people["bob"].cert, people["bob"].key).content == CONTENT
