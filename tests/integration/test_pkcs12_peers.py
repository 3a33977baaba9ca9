"""The PKCS#12 files mailpki writes, opened by real peers: openssl and gpgsm."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12 as crypto_pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailpki.keymanager._pkcs12_order import gpgsm_derives_the_same_keys, issuer_first
from mailpki.keymanager.pkcs12 import (
    PKCS12_LEGACY_KDF_ROUNDS,
    PKCS12Key,
    build_pkcs12,
    generate_password,
)

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
EMAIL = "alice@example.org"
FRIENDLY = "Alice Example (S/MIME)"


@dataclass(frozen=True)
class Material:
    root: x509.Certificate
    leaves: dict[str, tuple[PKCS12Key, x509.Certificate]]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result


@pytest.fixture(scope="module")
def material() -> Material:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailpki P12 Test Root")])
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    leaves: dict[str, tuple[PKCS12Key, x509.Certificate]] = {}
    keys: dict[str, PKCS12Key] = {
        "rsa2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
    }
    for kind, key in keys.items():
        is_rsa = isinstance(key, rsa.RSAPrivateKey)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Alice Example")]))
            .issuer_name(root_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(hours=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, is_rsa, False, not is_rsa, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(EMAIL)]), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
            )
            .sign(root_key, hashes.SHA256())
        )
        leaves[kind] = (key, leaf)
    return Material(root=root, leaves=leaves)


def _write_p12(material: Material, kind: str, legacy: bool, where: Path) -> tuple[Path, str]:
    key, leaf = material.leaves[kind]
    password = generate_password()
    path = where / f"{kind}-{'legacy' if legacy else 'modern'}.p12"
    path.write_bytes(
        build_pkcs12(
            key, leaf, [material.root], password.encode(), friendly_name=FRIENDLY, legacy=legacy
        )
    )
    return path, password


# -- openssl -----------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["modern", "legacy"])
@pytest.mark.parametrize("kind", ["rsa2048", "p256"])
def test_openssl_reads_the_file(
    material: Material, kind: str, legacy: bool, tmp_path: Path
) -> None:
    openssl = _tool("openssl")
    p12, password = _write_p12(material, kind, legacy, tmp_path)
    pw_file = tmp_path / "pw"
    pw_file.write_text(password + "\n")
    pw_file.chmod(0o600)
    common = ("-in", str(p12), "-passin", f"file:{pw_file}")

    key_pem = tmp_path / "key.pem"
    _run(openssl, "pkcs12", *common, "-nodes", "-nocerts", "-out", str(key_pem))
    leaf_pem = tmp_path / "leaf.pem"
    _run(openssl, "pkcs12", *common, "-nokeys", "-clcerts", "-out", str(leaf_pem))
    key_pub = _run(openssl, "pkey", "-in", str(key_pem), "-pubout").stdout
    cert_pub = _run(openssl, "x509", "-in", str(leaf_pem), "-pubkey", "-noout").stdout
    assert key_pub == cert_pub
    _, leaf = material.leaves[kind]
    expected = leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_pub.encode() == expected

    cas = _run(openssl, "pkcs12", *common, "-nokeys", "-cacerts").stdout
    assert x509.load_pem_x509_certificates(cas.encode()) == [material.root]

    info = _run(openssl, "pkcs12", *common, "-info", "-nodes")
    text = info.stdout + info.stderr
    assert f"friendlyName: {FRIENDLY}" in text
    if legacy:
        assert "MAC: sha1" in text and "pbeWithSHA1And3-KeyTripleDES-CBC" in text
    else:
        assert "MAC: sha256" in text and "PBES2, PBKDF2, AES-256-CBC" in text

    wrong = tmp_path / "wrong"
    wrong.write_text(password.swapcase() + "\n")
    bad = subprocess.run(
        [openssl, "pkcs12", "-in", str(p12), "-passin", f"file:{wrong}", "-nodes", "-info"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "mac verify" in (bad.stdout + bad.stderr).lower()


# -- gpgsm -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpgSM:
    binary: str
    version: str
    env: dict[str, str]


@pytest.fixture
def gpgsm() -> Iterator[GpgSM]:
    binary = _tool("gpgsm")
    gpgconf = _tool("gpgconf")
    # A short path under /tmp: gpg-agent puts its socket in GNUPGHOME when
    # /run/user is missing, and a socket path over ~107 bytes fails.
    home = Path(tempfile.mkdtemp(prefix="gpgsm-"))
    home.chmod(0o700)
    (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    (home / "gpgsm.conf").write_text("disable-crl-checks\n")
    env = {**os.environ, "GNUPGHOME": str(home), "LC_ALL": "C"}
    first = _run(binary, "--version", env=env).stdout.splitlines()[0]
    match = re.search(r"(\d+\.\d+\.\d+)", first)
    assert match, first
    try:
        yield GpgSM(binary=binary, version=match.group(1), env=env)
    finally:
        # gpgsm starts a gpg-agent (and dirmngr) per GNUPGHOME; leave none behind.
        subprocess.run(
            [gpgconf, "--kill", "all"], env=env, capture_output=True, timeout=30, check=False
        )
        shutil.rmtree(home, ignore_errors=True)


def _gpgsm_import(gpg: GpgSM, p12: Path, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [gpg.binary, "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0",
         "--import", str(p12)],
        input=password + "\n", capture_output=True, text=True, timeout=60, check=False,
        env=gpg.env,
    )  # fmt: skip


def _secret_fingerprints(gpg: GpgSM) -> tuple[set[str], str]:
    listing = subprocess.run(
        [gpg.binary, "--batch", "--with-colons", "--list-secret-keys"],
        capture_output=True, text=True, timeout=60, check=False, env=gpg.env,
    )  # fmt: skip
    fprs = {line.split(":")[9] for line in listing.stdout.splitlines() if line.startswith("fpr:")}
    human = subprocess.run(
        [gpg.binary, "--batch", "--list-secret-keys"],
        capture_output=True, text=True, timeout=60, check=False, env=gpg.env,
    ).stdout  # fmt: skip
    return fprs, human


def _sha1_fpr(cert: x509.Certificate) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der).hexdigest().upper()


def test_gpgsm_imports_legacy_rsa(material: Material, gpgsm: GpgSM, tmp_path: Path) -> None:
    p12, password = _write_p12(material, "rsa2048", True, tmp_path)
    result = _gpgsm_import(gpgsm, p12, password)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "secret keys imported: 1" in output
    fprs, human = _secret_fingerprints(gpgsm)
    _, leaf = material.leaves["rsa2048"]
    assert fprs == {_sha1_fpr(leaf)}
    assert f"aka: {EMAIL}" in human


def test_gpgsm_wrong_password_imports_nothing(
    material: Material, gpgsm: GpgSM, tmp_path: Path
) -> None:
    p12, password = _write_p12(material, "rsa2048", True, tmp_path)
    result = _gpgsm_import(gpgsm, p12, password.swapcase())
    assert result.returncode != 0
    assert _secret_fingerprints(gpgsm)[0] == set()


@pytest.mark.parametrize(
    ("kind", "legacy"),
    [("rsa2048", False), ("p256", True)],
    ids=["modern-rsa", "legacy-p256"],
)
def test_gpgsm_2_2_refuses(
    material: Material, gpgsm: GpgSM, tmp_path: Path, kind: str, legacy: bool
) -> None:
    """What gpgsm 2.2 cannot import, so the Key Manager offers legacy RSA files for it.

    Seen with gpgsm 2.2.40 (libksba 1.6.3):
    - modern (PBES2 / AES-256 / PBKDF2-HMAC-SHA256): exit 2, nothing imported,
      'encryptedData error at "pkcs5PBES2-params"' (it does not parse the
      hmacWithSHA256 PRF that OpenSSL 3 and cryptography write);
    - legacy (3DES / SHA-1) with a P-256 key: gpgsm dies with SIGSEGV after
      importing the certificates; its 2.2 PKCS#12 code reads RSA keys only.
    """
    if not gpgsm.version.startswith("2.2."):
        pytest.skip(f"the refusal was recorded for gpgsm 2.2, this is {gpgsm.version}")
    p12, password = _write_p12(material, kind, legacy, tmp_path)
    result = _gpgsm_import(gpgsm, p12, password)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    if not legacy:
        assert "pkcs5PBES2-params" in output
    assert _secret_fingerprints(gpgsm)[0] == set()


def test_the_gpgsm_kdf_model_matches_the_real_gpgsm(
    material: Material, gpgsm: GpgSM, tmp_path: Path
) -> None:
    """A legacy file whose salts the model flags (made without build_pkcs12's retry) is
    refused by the real gpgsm; the one build_pkcs12 makes with the same password imports."""
    key, leaf = material.leaves["rsa2048"]
    password = generate_password()
    builder = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(PKCS12_LEGACY_KDF_ROUNDS)
        .key_cert_algorithm(crypto_pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
    )
    for _ in range(2000):  # about 3 in 100 are flagged
        data = issuer_first(
            crypto_pkcs12.serialize_key_and_certificates(
                FRIENDLY.encode(), key, leaf, [material.root], builder.build(password.encode())
            ),
            password.encode(),
        )
        if not gpgsm_derives_the_same_keys(data, password.encode()):
            break
    else:
        pytest.fail("no flagged salt in 2,000 builds")
    flagged = tmp_path / "flagged.p12"
    flagged.write_bytes(data)
    refused = _gpgsm_import(gpgsm, flagged, password)
    assert refused.returncode != 0
    assert "secret keys imported" not in refused.stdout + refused.stderr

    p12 = tmp_path / "built.p12"
    p12.write_bytes(
        build_pkcs12(
            key, leaf, [material.root], password.encode(), friendly_name=FRIENDLY, legacy=True
        )
    )
    imported = _gpgsm_import(gpgsm, p12, password)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "secret keys imported: 1" in imported.stdout + imported.stderr
