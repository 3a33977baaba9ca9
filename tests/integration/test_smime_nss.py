"""The S/MIME toolkit against NSS, Thunderbird's S/MIME engine (Debian's libnss3-tools:
`certutil`, `pk12util`, `cmsutil`), both ways.

- NSS imports our modern PKCS#12, validates our certificates for e-mail signer and
  recipient, verifies our detached and opaque signatures (PKCS#1 v1.5 and PSS, with the
  encryption-key preference attributes) and decrypts our AES-CBC mail;
- NSS 3.87 reads neither AuthEnvelopedData (AES-GCM) nor RSA-OAEP key transport: the
  tests pin that, so a newer NSS that does shows up here;
- we verify NSS's signatures (BER, opaque and detached; SHA-256, and SHA-1 when allowed)
  carrying Thunderbird's id-aa-encrypKeyPref and Microsoft's preference, decrypt NSS's
  mail (also signed-then-encrypted), and `contacts add-from-signed` learns the
  certificate the preference names (in dual key not the signer's);
- a PKCS#12 exported by NSS (BER) loads without a warning.

Every message "from Thunderbird" is made by cmsutil here, never written by hand.
"""

from __future__ import annotations

import base64
import email
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailpki.ca.serials import show_serial
from mailpki.cms._der import definite_lengths
from mailpki.keymanager.pkcs12 import build_pkcs12, load_pkcs12
from tests.fixtures.nss import CERTUTIL, EMAIL_RECIPIENT, NSSDatabase, require_nss
from tests.fixtures.smime_pki import root_ca, smime_leaf
from tests.integration.cli_helpers import Result, mailpki, mailpki_process, make_csr, openssl

pytestmark = pytest.mark.integration

PASSWORD = "nss interop 2026"
INNER = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nHello from Thunderbird\r\nline two\r\n"


@dataclass(frozen=True)
class Env:
    home: Path
    work: Path
    password: Path
    alice_p12: Path  # a mailpki user
    tom_p12: Path  # a Thunderbird (NSS) user
    tom_cert: Path
    thunderbird: NSSDatabase  # Tom's database: his key, our root trusted
    root: Path


@dataclass(frozen=True)
class DualKey:
    """Dan's dual key from a self-made CA: a signing-only and an encryption-only half."""

    root: Path
    sign_p12: Path
    sign_cert: x509.Certificate
    encrypt_p12: Path
    encrypt_cert: x509.Certificate
    encrypt_pem: Path
    nss: NSSDatabase  # Dan's Thunderbird: both halves


def _enroll(env_home: Path, work: Path, password: Path, address: str, name: str) -> Path:
    p12 = work / f"{address.split('@')[0]}.p12"
    result = mailpki(
        "enroll", "--home", env_home, "--email", address, "--name", name, "--out", p12,
        "--password-file", password,
    )  # fmt: skip
    assert result.code == 0, result.err
    return p12


def _pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_nss()
    work = tmp_path_factory.mktemp("smime-nss")
    home = work / "corp"
    result = mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    )  # fmt: skip
    assert result.code == 0, result.err
    password = work / "pw"
    password.write_text(PASSWORD + "\n")
    alice = _enroll(home, work, password, "alice@example.com", "Alice Archer")
    tom = _enroll(home, work, password, "tom@example.com", "Tom Bird")
    tom_cert = _pem(work / "tom.pem", load_pkcs12(tom.read_bytes(), PASSWORD.encode()).certificate)
    alice_cert = _pem(
        work / "alice.pem", load_pkcs12(alice.read_bytes(), PASSWORD.encode()).certificate
    )
    thunderbird = NSSDatabase.create(work / "thunderbird")
    imported = thunderbird.import_pkcs12(tom, password)
    assert imported.returncode == 0, imported.stderr.decode()
    thunderbird.trust_root("Example Corp Root", home / "ca" / "root.pem")
    thunderbird.add_certificate("alice", alice_cert)
    yield Env(home, work, password, alice, tom, tom_cert, thunderbird, home / "ca" / "root.pem")


@pytest.fixture(scope="module")
def dual(env: Env) -> DualKey:
    folder = env.work / "dual"
    folder.mkdir()
    root, root_key = root_ca("Dual Root", organisation="Dual Org")
    sign_cert, sign_key = smime_leaf(
        root, root_key, mail="dan@dual.test", name="Dan S", usage="sign"
    )
    enc_cert, enc_key = smime_leaf(
        root, root_key, mail="dan@dual.test", name="Dan E", usage="encrypt"
    )
    sign_p12, enc_p12 = folder / "dan-sign.p12", folder / "dan-enc.p12"
    sign_p12.write_bytes(
        build_pkcs12(sign_key, sign_cert, [root], PASSWORD.encode(), friendly_name="dan-sign")
    )
    enc_p12.write_bytes(
        build_pkcs12(enc_key, enc_cert, [root], PASSWORD.encode(), friendly_name="dan-enc")
    )
    nss = NSSDatabase.create(folder / "nss")
    for p12 in (sign_p12, enc_p12):
        assert nss.import_pkcs12(p12, env.password).returncode == 0
    root_pem = _pem(folder / "root.pem", root)
    nss.trust_root("Dual Root", root_pem)
    return DualKey(
        root_pem,
        sign_p12,
        sign_cert,
        enc_p12,
        enc_cert,
        _pem(folder / "dan-enc.pem", enc_cert),
        nss,
    )


# -- MIME around cmsutil's CMS ------------------------------------------------------------

_counter = iter(range(1_000_000))


def write(env: Env, stem: str, data: bytes) -> Path:
    path = env.work / f"{stem}-{next(_counter)}.eml"
    path.write_bytes(data)
    return path


def b64(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + b"\r\n"


def headers(sender: str, to: str = "alice@example.com") -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: from Thunderbird\r\nMIME-Version: 1.0\r\n".encode()
    )


def pkcs7_mime(smime_type: str, der: bytes) -> bytes:
    return (
        f'Content-Type: application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
    ).encode() + b64(der)


def multipart_signed(content: bytes, signature: bytes, micalg: str = "sha-256") -> bytes:
    boundary = "nss-boundary-42"
    return (
        (
            f'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            f'micalg={micalg}; boundary="{boundary}"\r\n\r\n'
            f"This is a cryptographically signed message in MIME format.\r\n\r\n"
            f"--{boundary}\r\n"
        ).encode()
        + content
        + (
            f"\r\n--{boundary}\r\n"
            'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n'
        ).encode()
        + b64(signature)
        + f"\r\n--{boundary}--\r\n".encode()
    )


def nss_signed_mail(
    database: NSSDatabase,
    nickname: str,
    sender: str,
    work: Path,
    *,
    detached: bool,
    digest: str = "SHA256",
    preference: str | None = None,
) -> bytes:
    der = database.sign(
        nickname, INNER, detached=detached, digest=digest, preference=preference, work=work
    )
    assert der[:2] == b"\x30\x80", "cmsutil writes BER (indefinite lengths)"
    if detached:
        return headers(sender) + multipart_signed(
            INNER, der, "sha-1" if digest == "SHA1" else "sha-256"
        )
    return headers(sender) + pkcs7_mime("signed-data", der)


def payload(message: bytes) -> bytes:
    parsed = email.message_from_bytes(message, policy=policy.default)
    data = parsed.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def detached_parts(message: bytes) -> tuple[bytes, bytes]:
    boundary = re.search(rb'boundary="([^"]+)"', message)
    assert boundary
    marker = b"--" + boundary.group(1)
    start = message.index(marker + b"\r\n") + len(marker) + 2
    end = message.index(b"\r\n" + marker, start)
    parsed = email.message_from_bytes(message, policy=policy.default)
    signature = parsed.get_payload()[1]  # type: ignore[index]
    decoded = signature.get_payload(decode=True)
    assert isinstance(decoded, bytes)
    return message[start:end], decoded


def verify(env: Env, path: Path, *extra: str | Path) -> Result:
    return mailpki("mail", "verify", path, "--home", env.home, *extra)


def valid(result: Result) -> bool:
    return result.code == 0 and "VALID" in result.out.splitlines()


def recipient_serials(der: bytes) -> list[int]:
    info = cms.ContentInfo.load(definite_lengths(der))
    return [
        ri.chosen["rid"].chosen["serial_number"].native for ri in info["content"]["recipient_infos"]
    ]


# -- NSS reads what we make ---------------------------------------------------------------


def test_nss_imports_our_modern_pkcs12(env: Env) -> None:
    database = NSSDatabase.create(env.work / "fresh-import")
    proc = database.import_pkcs12(env.alice_p12, env.password)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"PKCS12 IMPORT SUCCESSFUL" in proc.stdout + proc.stderr
    keys = database.check(CERTUTIL, "-K", "-d", database.spec).stdout.decode()
    assert "rsa" in keys.lower(), keys  # the private key is in the database
    nickname = next(n for n in database.nicknames() if "Alice" in n)
    database.trust_root("Example Corp Root", env.root)
    assert database.validate(nickname, "S").returncode == 0


def test_nss_validates_our_certificate_for_mail_signer_and_recipient(env: Env) -> None:
    nickname = next(n for n in env.thunderbird.nicknames() if "Tom" in n)
    for usage in ("S", "R"):
        proc = env.thunderbird.validate(nickname, usage)
        assert proc.returncode == 0, (usage, proc.stdout, proc.stderr)
        assert b"certificate is valid" in proc.stdout + proc.stderr


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
@pytest.mark.parametrize("pss", [False, True], ids=["pkcs1", "pss"])
def test_nss_verifies_our_signatures(env: Env, opaque: bool, pss: bool) -> None:
    plain = write(env, "plain", headers("alice@example.com", "tom@example.com") + INNER)
    signed = env.work / f"signed-{next(_counter)}.eml"
    args: list[str | Path] = [
        "mail", "sign", plain, signed, "--p12", env.alice_p12, "--password-file", env.password,
    ]  # fmt: skip
    result = mailpki(*args, *(["--opaque"] if opaque else []), *(["--pss"] if pss else []))
    assert result.code == 0, result.err
    message = signed.read_bytes()
    if opaque:
        proc = env.thunderbird.decode(payload(message), work=env.work)
        assert proc.returncode == 0, proc.stderr.decode()
        assert proc.stdout.replace(b"\r\n", b"\n") == INNER.replace(b"\r\n", b"\n")
    else:
        content, signature = detached_parts(message)
        proc = env.thunderbird.decode(signature, work=env.work, detached_content=content)
        assert proc.returncode == 0, proc.stderr.decode()
        tampered = env.thunderbird.decode(
            signature, work=env.work, detached_content=content.replace(b"line two", b"line 2!")
        )
        assert tampered.returncode != 0


def test_our_signature_names_the_encryption_certificate_for_nss_and_openssl(env: Env) -> None:
    plain = write(env, "plain", headers("alice@example.com", "tom@example.com") + INNER)
    signed = env.work / f"signed-{next(_counter)}.eml"
    result = mailpki(
        "mail", "sign", plain, signed, "--p12", env.alice_p12, "--password-file", env.password,
        "--opaque",
    )  # fmt: skip
    assert result.code == 0, result.err
    der = env.work / "ours.p7m"
    der.write_bytes(payload(signed.read_bytes()))
    parsed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", der).stdout
    assert "id-smime-aa-encrypKeyPref" in parsed
    assert "1.3.6.1.4.1.311.16.4" in parsed
    openssl("cms", "-verify", "-inform", "DER", "-in", der, "-CAfile", env.root, "-out", os.devnull)
    assert env.thunderbird.decode(der.read_bytes(), work=env.work).returncode == 0


def test_signed_and_encrypted_mail_names_the_encryption_certificate_inside(env: Env) -> None:
    """sign-encrypt: NSS (Thunderbird's engine) opens the envelope; the signature inside
    carries both preference attributes, verified by openssl."""
    plain = write(env, "plain", headers("alice@example.com", "tom@example.com") + INNER)
    out = env.work / f"sign-enc-{next(_counter)}.eml"
    result = mailpki(
        "mail", "sign-encrypt", plain, out, "--p12", env.alice_p12, "--password-file",
        env.password, "--to", "tom@example.com", "--home", env.home,
    )  # fmt: skip
    assert result.code == 0, result.err
    opened = env.thunderbird.decode(payload(out.read_bytes()), work=env.work, usage=EMAIL_RECIPIENT)
    assert opened.returncode == 0, opened.stderr.decode()
    inner = opened.stdout.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if b"multipart/signed" in inner.split(b"\r\n\r\n", 1)[0]:
        _, signature = detached_parts(inner)
    else:  # opaque
        signature = payload(inner)
    der = env.work / f"inner-{next(_counter)}.p7s"
    der.write_bytes(signature)
    parsed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", der).stdout
    assert "id-smime-aa-encrypKeyPref" in parsed
    assert "1.3.6.1.4.1.311.16.4" in parsed


def _encrypt(env: Env, *options: str) -> bytes:
    plain = write(env, "plain", headers("alice@example.com", "tom@example.com") + INNER)
    out = env.work / f"enc-{next(_counter)}.eml"
    result = mailpki(
        "mail", "encrypt", plain, out, "--to", "tom@example.com", "--home", env.home, *options
    )
    assert result.code == 0, result.err
    return payload(out.read_bytes())


def test_nss_decrypts_our_aes_cbc_mail(env: Env) -> None:
    proc = env.thunderbird.decode(_encrypt(env), work=env.work, usage=EMAIL_RECIPIENT)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Hello from Thunderbird" in proc.stdout


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        (("--cipher", "aes256-gcm"), b"SEC_ERROR_UNRECOGNIZED_OID"),
        (("--oaep",), b"SEC_ERROR_UNSUPPORTED_KEYALG"),
    ],
    ids=["aes-gcm", "rsa-oaep"],
)
def test_nss_does_not_read_gcm_or_oaep(env: Env, options: tuple[str, ...], refusal: bytes) -> None:
    """What NSS 3.87 (Debian 12) supports: no AuthEnvelopedData, no RSA-OAEP. If this
    fails because NSS decrypts, NSS gained the feature: update the table in docs/smime.md."""
    proc = env.thunderbird.decode(_encrypt(env, *options), work=env.work, usage=EMAIL_RECIPIENT)
    assert proc.returncode != 0
    assert refusal in proc.stderr, proc.stderr.decode()


# -- we read what NSS makes ---------------------------------------------------------------


@pytest.mark.parametrize("detached", [False, True], ids=["opaque", "detached"])
def test_we_verify_nss_signatures(env: Env, detached: bool) -> None:
    nickname = next(n for n in env.thunderbird.nicknames() if "Tom" in n)
    message = nss_signed_mail(
        env.thunderbird, nickname, "tom@example.com", env.work, detached=detached
    )
    result = verify(env, write(env, "nss-signed", message), "--json")
    assert result.code == 0, result.out + result.err
    report = json.loads(result.out)
    assert report["valid"] is True
    assert report["from"] == ["tom@example.com"]
    assert "encrypKeyPref" in report["signed_attributes"]
    assert "msEncryptionKeyPreference" in report["signed_attributes"]
    tom = x509.load_pem_x509_certificate(env.tom_cert.read_bytes())
    assert report["encryption_certificate"]["serial"] == show_serial(tom.serial_number)
    assert report["encryption_certificate"]["is_signer"] is True


@pytest.mark.parametrize("detached", [False, True], ids=["opaque", "detached"])
def test_sha1_signatures_from_nss_need_allow_sha1(env: Env, detached: bool) -> None:
    nickname = next(n for n in env.thunderbird.nicknames() if "Tom" in n)
    message = nss_signed_mail(
        env.thunderbird, nickname, "tom@example.com", env.work, detached=detached, digest="SHA1"
    )
    path = write(env, "nss-sha1", message)
    refused = verify(env, path)
    assert refused.code == 1
    assert "SHA-1" in refused.out and "VALID" not in refused.out.splitlines()
    accepted = verify(env, path, "--allow-sha1")
    assert valid(accepted), accepted.out + accepted.err
    assert "SHA-1" in accepted.out  # the warning line
    contacts = env.work / f"contacts-{next(_counter)}"
    adding = ("contacts", "add-from-signed", path, "--contacts", contacts, "--home", env.home)
    refused_add = mailpki(*adding)
    assert refused_add.code != 0 and "SHA-1" in refused_add.err
    assert not contacts.exists() or not list(contacts.iterdir())
    assert mailpki(*adding, "--allow-sha1").code == 0
    assert len(list(contacts.glob("*.pem"))) == 1


def test_we_decrypt_nss_mail(env: Env) -> None:
    der = env.thunderbird.encrypt("alice@example.com", INNER, work=env.work)
    message = write(env, "nss-enc", headers("tom@example.com") + pkcs7_mime("enveloped-data", der))
    out = env.work / f"dec-{next(_counter)}.eml"
    result = mailpki(
        "mail", "decrypt", message, out, "--p12", env.alice_p12, "--password-file", env.password
    )
    assert result.code == 0, result.err
    assert b"Hello from Thunderbird" in out.read_bytes()
    assert "aes" in result.err.lower()


@pytest.mark.parametrize("detached", [False, True], ids=["opaque", "detached"])
def test_we_decrypt_then_verify_nss_signed_and_encrypted_mail(env: Env, detached: bool) -> None:
    nickname = next(n for n in env.thunderbird.nicknames() if "Tom" in n)
    signed_der = env.thunderbird.sign(nickname, INNER, detached=detached, work=env.work)
    inner_entity = (
        multipart_signed(INNER, signed_der) if detached else pkcs7_mime("signed-data", signed_der)
    )
    enveloped = env.thunderbird.encrypt("alice@example.com", inner_entity, work=env.work)
    message = write(
        env, "nss-sign-enc", headers("tom@example.com") + pkcs7_mime("enveloped-data", enveloped)
    )
    decrypted = env.work / f"dec-{next(_counter)}.eml"
    result = mailpki(
        "mail", "decrypt", message, decrypted, "--p12", env.alice_p12,
        "--password-file", env.password,
    )  # fmt: skip
    assert result.code == 0, result.err
    checked = verify(env, decrypted, "--out", env.work / f"clear-{next(_counter)}.eml")
    assert valid(checked), checked.out + checked.err


def test_add_from_signed_learns_a_thunderbird_correspondent(env: Env) -> None:
    nickname = next(n for n in env.thunderbird.nicknames() if "Tom" in n)
    message = nss_signed_mail(env.thunderbird, nickname, "tom@example.com", env.work, detached=True)
    contacts = env.work / f"contacts-{next(_counter)}"
    result = mailpki(
        "contacts", "add-from-signed", write(env, "nss", message), "--contacts", contacts,
        "--home", env.home,
    )  # fmt: skip
    assert result.code == 0, result.err
    tom = x509.load_pem_x509_certificate(env.tom_cert.read_bytes())
    stored = [x509.load_pem_x509_certificate(p.read_bytes()) for p in contacts.glob("*.pem")]
    assert stored == [tom]


# -- dual key: the preference names the encryption half -------------------------------------


def test_add_from_signed_keeps_the_certificate_the_preference_names(
    env: Env, dual: DualKey
) -> None:
    message = nss_signed_mail(
        dual.nss, "dan-sign", "dan@dual.test", env.work, detached=False, preference="dan-enc"
    )
    path = write(env, "nss-dual", message)
    report = json.loads(mailpki("mail", "verify", path, "--trust", dual.root, "--json").out)
    assert report["valid"] is True
    assert report["serial"] == show_serial(dual.sign_cert.serial_number)
    assert report["encryption_certificate"]["serial"] == show_serial(
        dual.encrypt_cert.serial_number
    )
    assert report["encryption_certificate"]["is_signer"] is False
    contacts = env.work / f"contacts-{next(_counter)}"
    result = mailpki(
        "contacts", "add-from-signed", path, "--trust", dual.root, "--contacts", contacts
    )
    assert result.code == 0, result.err
    assert "encryption certificate" in result.out
    stored = [x509.load_pem_x509_certificate(p.read_bytes()) for p in contacts.glob("*.pem")]
    assert stored == [dual.encrypt_cert]


def test_our_dual_key_signature_names_the_encryption_half(env: Env, dual: DualKey) -> None:
    plain = write(env, "plain", headers("dan@dual.test", "tom@example.com") + INNER)
    signed = env.work / f"dual-{next(_counter)}.eml"
    result = mailpki(
        "mail", "sign", plain, signed, "--p12", dual.sign_p12, "--password-file", env.password,
        "--encryption-cert", dual.encrypt_pem,
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(mailpki("mail", "verify", signed, "--trust", dual.root, "--json").out)
    assert report["valid"] is True
    assert report["encryption_certificate"]["serial"] == show_serial(
        dual.encrypt_cert.serial_number
    )
    # NSS (a database trusting only the root) verifies it, attributes and all.
    reader = NSSDatabase.create(env.work / f"reader-{next(_counter)}")
    reader.trust_root("Dual Root", dual.root)
    content, signature = detached_parts(signed.read_bytes())
    proc = reader.decode(signature, work=env.work, detached_content=content)
    assert proc.returncode == 0, proc.stderr.decode()
    # The encryption half travels in the message for the correspondent to keep.
    certificates = cms.ContentInfo.load(signature)["content"]["certificates"]
    carried = {c.chosen.serial_number for c in certificates}
    assert dual.encrypt_cert.serial_number in carried


def test_signing_only_certificate_without_encryption_cert_names_none(
    env: Env, dual: DualKey
) -> None:
    plain = write(env, "plain", headers("dan@dual.test", "tom@example.com") + INNER)
    signed = env.work / f"dual-{next(_counter)}.eml"
    result = mailpki(
        "mail", "sign", plain, signed, "--p12", dual.sign_p12, "--password-file", env.password,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "--encryption-cert" in result.err
    report = json.loads(mailpki("mail", "verify", signed, "--trust", dual.root, "--json").out)
    assert "encrypKeyPref" not in report["signed_attributes"]


def test_encryption_cert_of_someone_else_is_refused(env: Env, dual: DualKey) -> None:
    plain = write(env, "plain", headers("dan@dual.test", "tom@example.com") + INNER)
    result = mailpki(
        "mail", "sign", plain, env.work / "never.eml", "--p12", dual.sign_p12,
        "--password-file", env.password, "--encryption-cert", env.tom_cert,
    )  # fmt: skip
    assert result.code == 2
    assert "not for dan@dual.test" in result.err
    assert not (env.work / "never.eml").exists()


# -- PKCS#12 exported by NSS ---------------------------------------------------------------


def test_pkcs12_exported_by_nss_loads_without_a_warning(env: Env) -> None:
    nickname = next(n for n in env.thunderbird.nicknames() if "Tom" in n)
    exported = env.work / "tom-from-nss.p12"
    env.thunderbird.export_pkcs12(nickname, exported, env.password)
    assert exported.read_bytes()[:2] == b"\x30\x80", "NSS writes BER"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_pkcs12(exported.read_bytes(), PASSWORD.encode())
    assert loaded.certificate == x509.load_pem_x509_certificate(env.tom_cert.read_bytes())
    # The command line, as a person runs it, with every warning an error.
    plain = write(env, "plain", headers("tom@example.com", "alice@example.com") + INNER)
    out = env.work / f"signed-{next(_counter)}.eml"
    result = mailpki_process(
        "mail", "sign", plain, out, "--p12", exported, "--password-file", env.password,
        env={**os.environ, "PYTHONWARNINGS": "error::UserWarning"},
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "Warning" not in result.err
    assert valid(verify(env, out))


def test_dual_key_from_the_instance_names_the_escrowed_encryption_certificate(env: Env) -> None:
    """A dual-key enrollment (own signing key, central encryption key): `mail sign --home`
    finds the encryption half in the instance and names it; NSS verifies the result."""
    csr = make_csr(env.work, "frank-sign", key="ec")
    enc_p12 = env.work / "frank-enc.p12"
    result = mailpki(
        "enroll", "--home", env.home, "--email", "frank@example.com", "--name", "Frank Fern",
        "--out", enc_p12, "--password-file", env.password, "--dual-key", "--signing-csr", csr,
    )  # fmt: skip
    assert result.code == 0, result.err
    signing_pem = Path(result.out.split("not escrowed): ", 1)[1].split()[0])
    sign_p12 = env.work / "frank-sign.p12"
    openssl(
        "pkcs12", "-export", "-inkey", env.work / "frank-sign.key", "-in", signing_pem,
        "-out", sign_p12, "-passout", f"file:{env.password}", "-name", "Frank signing",
    )  # fmt: skip
    encryption = load_pkcs12(enc_p12.read_bytes(), PASSWORD.encode()).certificate
    plain = write(env, "plain", headers("frank@example.com", "tom@example.com") + INNER)
    signed = env.work / f"frank-{next(_counter)}.eml"
    result = mailpki(
        "mail", "sign", plain, signed, "--p12", sign_p12, "--password-file", env.password,
        "--home", env.home,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert show_serial(encryption.serial_number) in result.err  # stderr says which it named
    report = json.loads(verify(env, signed, "--json").out)
    assert report["valid"] is True, report
    assert report["encryption_certificate"]["serial"] == show_serial(encryption.serial_number)
    assert report["encryption_certificate"]["is_signer"] is False
    content, signature = detached_parts(signed.read_bytes())
    proc = env.thunderbird.decode(signature, work=env.work, detached_content=content)
    assert proc.returncode == 0, proc.stderr.decode()


def test_nss_cannot_make_pss_and_its_attempt_is_refused_everywhere(env: Env) -> None:
    """NSS 3.87 signs CMS with RSA-PSS only for an RSA-PSS key, and then labels the
    signature rsassaPss without parameters (which means SHA-1) while computing PKCS#1
    v1.5 over SHA-256. NSS itself, OpenSSL and mailpki all refuse that message; PSS
    interop is therefore tested in the other direction only (NSS verifies ours)."""
    folder = env.work / "nss-pss"
    folder.mkdir()
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", folder / "root.key", "-subj", "/CN=PSS Root/O=Example", "-days", "30",
        "-out", folder / "root.pem",
    )  # fmt: skip
    openssl(
        "genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048",
        "-out", folder / "pat.key",
    )  # fmt: skip
    openssl(
        "req", "-new", "-key", folder / "pat.key", "-subj", "/CN=Pat/O=Example",
        "-out", folder / "pat.csr",
    )  # fmt: skip
    (folder / "ext.cnf").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=emailProtection\nsubjectAltName=email:pat@example.com\n"
    )
    openssl(
        "x509", "-req", "-in", folder / "pat.csr", "-CA", folder / "root.pem",
        "-CAkey", folder / "root.key", "-CAcreateserial", "-days", "30",
        "-extfile", folder / "ext.cnf", "-out", folder / "pat.pem",
    )  # fmt: skip
    openssl(
        "pkcs12", "-export", "-inkey", folder / "pat.key", "-in", folder / "pat.pem",
        "-out", folder / "pat.p12", "-passout", f"file:{env.password}", "-name", "pat",
    )  # fmt: skip
    nss = NSSDatabase.create(folder / "db")
    assert nss.import_pkcs12(folder / "pat.p12", env.password).returncode == 0
    nss.trust_root("PSS Root", folder / "root.pem")
    der = nss.sign("pat", INNER, work=folder)
    (folder / "pat.p7m").write_bytes(der)
    assert "rsassaPss" in openssl("asn1parse", "-inform", "DER", "-in", folder / "pat.p7m").stdout
    assert nss.decode(der, work=folder).returncode != 0  # NSS refuses its own message
    refused = openssl(
        "cms", "-verify", "-inform", "DER", "-in", folder / "pat.p7m",
        "-CAfile", folder / "root.pem", "-out", os.devnull, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    message = write(env, "nss-pss", headers("pat@example.com") + pkcs7_mime("signed-data", der))
    ours = mailpki("mail", "verify", message, "--trust", folder / "root.pem")
    assert ours.code == 1 and "VALID" not in ours.out.splitlines()
