"""CMS SignedData interop with the real `openssl cms`, in both directions.

OpenSSL signs (DER, streamed BER, PEM, detached, RSA PKCS#1 v1.5, RSA-PSS, ECDSA,
subjectKeyIdentifier signers, no signed attributes) and `verify_signed` checks it;
`sign()` signs and `openssl cms -verify` checks it, with and without trusting the
self-signed signer certificate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailpki.cms.signed import sign, verify_signed
from mailpki.errors import CMSError
from tests.fixtures.cms_tools import OPENSSL, openssl, write_key_and_cert

pytestmark = pytest.mark.integration

if not OPENSSL:  # pragma: no cover - the CI test command installs it
    pytest.skip("openssl is not installed", allow_module_level=True)

CONTENT = b"recovery request: escrow id 42\r\nsecond line\n\x00\xff binary tail"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Signer:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    key_path: Path
    cert_path: Path


def self_signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, cn: str) -> x509.Certificate:
    """An S/MIME signing certificate OpenSSL accepts as its own trust anchor."""
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
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
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
    path = tmp_path_factory.mktemp("cms")
    (path / "content.bin").write_bytes(CONTENT)
    return path


@pytest.fixture(scope="module")
def signers(workdir: Path) -> dict[str, Signer]:
    keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
    }
    result = {}
    for name, key in keys.items():
        cert = self_signed(key, name)
        key_path, cert_path = write_key_and_cert(workdir, name, key, cert)
        result[name] = Signer(key, cert, key_path, cert_path)
    return result


def openssl_sign(workdir: Path, signer: Signer, *options: str, outform: str = "DER") -> bytes:
    out = workdir / "signed.out"
    done = openssl(
        "cms",
        "-sign",
        "-binary",
        "-in",
        workdir / "content.bin",
        "-signer",
        signer.cert_path,
        "-inkey",
        signer.key_path,
        "-outform",
        outform,
        "-out",
        out,
        *options,
    )
    assert done.returncode == 0, done.stderr.decode()
    return out.read_bytes()


def signature_algorithm(message: bytes) -> str:
    info = cms.ContentInfo.load(message)
    name: str = info["content"]["signer_infos"][0]["signature_algorithm"]["algorithm"].native
    return name


# --- OpenSSL signs, verify_signed checks ---


@pytest.mark.parametrize(
    ("signer_name", "options", "digest", "algorithm"),
    [
        ("rsa", ["-nodetach"], "sha256", "rsassa_pkcs1v15"),
        ("rsa", ["-nodetach", "-md", "sha512"], "sha512", "rsassa_pkcs1v15"),
        ("rsa", ["-nodetach", "-keyopt", "rsa_padding_mode:pss"], "sha256", "rsassa_pss"),
        (
            "rsa",
            [
                "-nodetach",
                "-md",
                "sha384",
                "-keyopt",
                "rsa_padding_mode:pss",
                "-keyopt",
                "rsa_pss_saltlen:digest",
            ],
            "sha384",
            "rsassa_pss",
        ),
        ("rsa", ["-nodetach", "-keyid"], "sha256", "rsassa_pkcs1v15"),
        ("p256", ["-nodetach"], "sha256", "sha256_ecdsa"),
        ("p256", ["-nodetach", "-keyid", "-md", "sha512"], "sha512", "sha512_ecdsa"),
        ("p384", ["-nodetach", "-md", "sha384"], "sha384", "sha384_ecdsa"),
    ],
    ids=[
        "rsa",
        "rsa-sha512",
        "pss",
        "pss-sha384-saltlen-digest",
        "rsa-keyid",
        "p256",
        "p256-keyid-sha512",
        "p384",
    ],
)
def test_openssl_signed_der_verifies(
    workdir: Path,
    signers: dict[str, Signer],
    signer_name: str,
    options: list[str],
    digest: str,
    algorithm: str,
) -> None:
    signer = signers[signer_name]
    message = openssl_sign(workdir, signer, *options)
    assert signature_algorithm(message) == algorithm
    result = verify_signed(message)
    assert result.content == CONTENT
    assert result.signer == signer.cert
    assert result.certificates == (signer.cert,)
    assert result.digest_algorithm == digest
    assert result.signing_time is not None
    assert abs(result.signing_time - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)


def test_openssl_pss_parameters_are_read(workdir: Path, signers: dict[str, Signer]) -> None:
    message = openssl_sign(
        workdir,
        signers["rsa"],
        "-nodetach",
        "-keyopt",
        "rsa_padding_mode:pss",
        "-keyopt",
        "rsa_pss_saltlen:20",
    )
    params = cms.ContentInfo.load(message)["content"]["signer_infos"][0]["signature_algorithm"][
        "parameters"
    ]
    assert params["salt_length"].native == 20
    assert params["mask_gen_algorithm"]["parameters"]["algorithm"].native == "sha256"
    assert verify_signed(message).content == CONTENT


def test_openssl_streamed_ber_verifies(workdir: Path, signers: dict[str, Signer]) -> None:
    for name in ("rsa", "p256"):
        message = openssl_sign(workdir, signers[name], "-stream")
        assert message[:2] == b"\x30\x80", "expected indefinite-length BER"
        result = verify_signed(message)
        assert result.content == CONTENT
        assert result.signer == signers[name].cert


def test_openssl_detached_verifies(workdir: Path, signers: dict[str, Signer]) -> None:
    message = openssl_sign(workdir, signers["p256"])  # no -nodetach: detached
    assert CONTENT not in message
    assert verify_signed(message, detached_content=CONTENT).signer == signers["p256"].cert
    with pytest.raises(CMSError, match="carries no content"):
        verify_signed(message)
    with pytest.raises(CMSError, match="messageDigest does not match the content"):
        verify_signed(message, detached_content=CONTENT[:-1])


def test_openssl_without_signed_attributes(workdir: Path, signers: dict[str, Signer]) -> None:
    for name in ("rsa", "p256"):
        result = verify_signed(openssl_sign(workdir, signers[name], "-nodetach", "-noattr"))
        assert result.content == CONTENT
        assert result.signing_time is None


def test_openssl_pem_verifies(workdir: Path, signers: dict[str, Signer]) -> None:
    cms_pem = openssl_sign(workdir, signers["p256"], "-nodetach", outform="PEM")
    assert cms_pem.startswith(b"-----BEGIN CMS-----")
    assert verify_signed(cms_pem).content == CONTENT

    out = workdir / "smime.pem"
    done = openssl(
        "smime",
        "-sign",
        "-binary",
        "-nodetach",
        "-in",
        workdir / "content.bin",
        "-signer",
        signers["p256"].cert_path,
        "-inkey",
        signers["p256"].key_path,
        "-outform",
        "PEM",
        "-out",
        out,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert out.read_bytes().startswith(b"-----BEGIN PKCS7-----")
    assert verify_signed(out.read_bytes()).content == CONTENT


def test_openssl_extra_certificates_are_reported(workdir: Path, signers: dict[str, Signer]) -> None:
    message = openssl_sign(
        workdir, signers["p256"], "-nodetach", "-certfile", str(signers["p384"].cert_path)
    )
    result = verify_signed(message)
    assert result.signer == signers["p256"].cert
    assert set(result.certificates) == {signers["p256"].cert, signers["p384"].cert}


def test_openssl_sha1_refused(workdir: Path, signers: dict[str, Signer]) -> None:
    message = openssl_sign(workdir, signers["p256"], "-nodetach", "-md", "sha1")
    with pytest.raises(CMSError, match="SHA-1/MD5 signatures are not accepted"):
        verify_signed(message)


def test_openssl_tampered_content_refused(workdir: Path, signers: dict[str, Signer]) -> None:
    for options in (["-nodetach"], ["-stream"], ["-nodetach", "-noattr"]):
        message = openssl_sign(workdir, signers["rsa"], *options)
        index = message.index(b"escrow id 42")
        tampered = message[:index] + b"escrow id 43" + message[index + 12 :]
        with pytest.raises(CMSError):
            verify_signed(tampered)


# --- sign() signs, OpenSSL checks ---


def openssl_verify(
    workdir: Path, message: bytes, *options: str | Path, detached: bool = False
) -> bytes:
    """Run `openssl cms -verify`; the verified content, or an AssertionError with OpenSSL's complaint."""
    (workdir / "ours.der").write_bytes(message)
    out = workdir / "verified.bin"
    out.unlink(missing_ok=True)
    content = ["-content", workdir / "content.bin"] if detached else []
    done = openssl(
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-binary",
        "-in",
        workdir / "ours.der",
        "-out",
        out,
        *content,
        *options,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"Verification successful" in done.stderr
    return out.read_bytes()


@pytest.mark.parametrize("detached", [False, True], ids=["embedded", "detached"])
@pytest.mark.parametrize("signer_name", ["rsa", "p256", "p384"])
def test_sign_verified_by_openssl(
    workdir: Path, signers: dict[str, Signer], signer_name: str, detached: bool
) -> None:
    signer = signers[signer_name]
    message = sign(CONTENT, signer.cert, signer.key, detached=detached)
    # Without trust: only the signature is checked.
    assert openssl_verify(workdir, message, "-noverify", detached=detached) == CONTENT
    # Trusting the self-signed signer certificate: chain and S/MIME purpose too.
    assert (
        openssl_verify(workdir, message, "-CAfile", signer.cert_path, detached=detached) == CONTENT
    )
    # And our own verifier agrees.
    assert (
        verify_signed(message, detached_content=CONTENT if detached else None).signer == signer.cert
    )


def test_sign_extra_certificates_seen_by_openssl(workdir: Path, signers: dict[str, Signer]) -> None:
    extra = [signers["p384"].cert, signers["rsa"].cert]
    message = sign(CONTENT, signers["p256"].cert, signers["p256"].key, extra_certificates=extra)
    certs_out = workdir / "certs.pem"
    openssl_verify(workdir, message, "-noverify", "-certsout", certs_out)
    carried = x509.load_pem_x509_certificates(certs_out.read_bytes())
    assert set(carried) == {signers["p256"].cert, *extra}


def test_openssl_refuses_tampered_sign_output(workdir: Path, signers: dict[str, Signer]) -> None:
    # Sanity check of the check above: OpenSSL does notice a changed content.
    message = sign(CONTENT, signers["p256"].cert, signers["p256"].key)
    index = message.index(b"escrow id 42")
    tampered = message[:index] + b"escrow id 43" + message[index + 12 :]
    (workdir / "tampered.der").write_bytes(tampered)
    done = openssl(
        "cms", "-verify", "-inform", "DER", "-binary", "-noverify", "-in", workdir / "tampered.der"
    )
    assert done.returncode != 0
    with pytest.raises(CMSError, match="messageDigest does not match the content"):
        verify_signed(tampered)
