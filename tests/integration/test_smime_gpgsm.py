"""The S/MIME toolkit against the real GnuPG `gpgsm`, both ways, in a throwaway GNUPGHOME.

gpgsm imports our legacy (3DES) PKCS#12, verifies our opaque and detached signatures and
decrypts our mail; we verify gpgsm's signatures (BER, opaque and detached) and decrypt
gpgsm's encryption (BER; 3DES, AES-128, AES-256).

gpgsm 2.2 reads neither AuthEnvelopedData (AES-GCM) nor RSA-OAEP key transport, so only
AES-CBC with PKCS#1 v1.5 is tried in that direction.
"""

from __future__ import annotations

import base64
import contextlib
import email
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from mailpki.ca.serials import show_serial
from mailpki.cms._der import definite_lengths
from mailpki.keymanager.pkcs12 import build_pkcs12
from tests.fixtures.smime_pki import root_ca, smime_leaf
from tests.integration.cli_helpers import Result, mailpki

pytestmark = pytest.mark.integration

GPGSM = shutil.which("gpgsm")
if not GPGSM:  # pragma: no cover - the CI test command installs it
    pytest.skip("gpgsm is not installed", allow_module_level=True)

PASSWORD = "gpgsm interop 2026"
PLAIN = (
    b"From: Bob Builder <bob@example.com>\n"
    b"To: Alice Archer <alice@example.com>\n"
    b"Subject: via gpgsm\n"
    b"\n"
    b"Hello Alice,\n"
    b"this goes through gpgsm.\n"
)
CONTENT = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nHello from gpgsm\r\nsecond line\r\n"


@dataclass(frozen=True)
class Env:
    home: Path
    work: Path
    password: Path
    gnupghome: Path
    bob_p12: Path
    alice_p12: Path

    def gpgsm(
        self, *args: str | Path, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(GPGSM), "--batch", "--status-fd", "2", *[str(a) for a in args]],
            input=stdin,
            capture_output=True,
            env={**os.environ, "GNUPGHOME": str(self.gnupghome)},
            timeout=120,
        )

    def gpgsm_with_passphrase(self, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
        return self.gpgsm(
            "--pinentry-mode", "loopback", "--passphrase-fd", "0", *args,
            stdin=PASSWORD.encode() + b"\n",
        )  # fmt: skip


def _enroll(home: Path, work: Path, password: Path, address: str, name: str) -> Path:
    p12 = work / f"{address.split('@')[0]}.p12"
    result = mailpki(
        "enroll", "--home", home, "--email", address, "--name", name, "--out", p12,
        "--password-file", password, "--legacy-p12",
    )  # fmt: skip
    assert result.code == 0, result.err
    return p12


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("smime-gpgsm")
    home = work / "corp"
    result = mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    )  # fmt: skip
    assert result.code == 0, result.err
    password = work / "pw"
    password.write_text(PASSWORD + "\n")
    bob = _enroll(home, work, password, "bob@example.com", "Bob Builder")
    alice = _enroll(home, work, password, "alice@example.com", "Alice Archer")
    # gpg-agent's socket path must stay short: a directory directly under /tmp.
    gnupghome = Path(tempfile.mkdtemp(prefix="gh-", dir="/tmp"))
    gnupghome.chmod(0o700)
    (gnupghome / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    (gnupghome / "gpgsm.conf").write_text("disable-crl-checks\ndisable-dirmngr\n")
    root = x509.load_pem_x509_certificate((home / "ca" / "root.pem").read_bytes())
    fingerprint = root.fingerprint(hashes.SHA1()).hex(":").upper()
    (gnupghome / "trustlist.txt").write_text(f"{fingerprint} S relax\n")
    environment = Env(home, work, password, gnupghome, bob, alice)
    # Start the agent before gpgsm needs it: one auto-started under load can miss
    # gpgsm's connect timeout.
    subprocess.run(
        ["gpgconf", "--launch", "gpg-agent"],
        env={**os.environ, "GNUPGHOME": str(gnupghome)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    try:
        for ca in ("root.pem", "issuing.pem"):
            proc = environment.gpgsm("--import", home / "ca" / ca)
            assert proc.returncode == 0, proc.stderr.decode()
        yield environment
    finally:
        subprocess.run(
            ["gpgconf", "--kill", "all"],
            env={**os.environ, "GNUPGHOME": str(gnupghome)},
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(gnupghome, ignore_errors=True)


@pytest.fixture(scope="module")
def imported(env: Env) -> Env:
    """Alice's legacy PKCS#12 imported into gpgsm (key and certificate)."""
    proc = env.gpgsm_with_passphrase("--import", env.alice_p12)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"secret keys imported: 1" in proc.stderr, proc.stderr.decode()
    return env


_counter = iter(range(1_000_000))


def fresh(env: Env, stem: str, suffix: str = ".eml") -> Path:
    return env.work / f"{stem}-{next(_counter)}{suffix}"


def write(env: Env, stem: str, data: bytes, suffix: str = ".eml") -> Path:
    path = fresh(env, stem, suffix)
    path.write_bytes(data)
    return path


def b64(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + b"\r\n"


def payload(message: Path) -> bytes:
    """The decoded body of an application/pkcs7-mime message."""
    parsed = email.message_from_bytes(message.read_bytes(), policy=policy.default)
    assert parsed.get_content_type() == "application/pkcs7-mime"
    data = parsed.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def detached_parts(message: Path) -> tuple[bytes, bytes]:
    """(the first part's exact bytes, the decoded signature) of a multipart/signed message."""
    data = message.read_bytes()
    boundary = re.search(rb'boundary="([^"]+)"', data)
    assert boundary
    delimiter = b"\r\n--" + boundary.group(1)
    start = data.index(b"--" + boundary.group(1) + b"\r\n") + len(boundary.group(1)) + 4
    end = data.index(delimiter, start)
    content = data[start:end]
    parsed = email.message_from_bytes(data, policy=policy.default)
    signature = parsed.get_payload()[1]  # type: ignore[index]
    assert signature.get_content_type() == "application/pkcs7-signature"
    return content, signature.get_payload(decode=True)


def status(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stderr.decode("utf-8", "replace")


def verify(env: Env, path: Path, *extra: str | Path) -> Result:
    return mailpki("mail", "verify", path, "--home", env.home, *extra)


def valid(result: Result) -> bool:
    return result.code == 0 and any(line == "VALID" for line in result.out.splitlines())


def test_gpgsm_imports_our_legacy_pkcs12(imported: Env) -> None:
    proc = imported.gpgsm("--list-secret-keys", "--with-colons")
    assert proc.returncode == 0, status(proc)
    listing = proc.stdout.decode()
    assert "alice@example.com" in listing
    # The chain is complete and trusted: validity 'u' (ultimate) or 'f' (full) is not
    # required, but no 'i' (invalid) / 'r' (revoked) / 'e' (expired) flag.
    crt = [line for line in listing.splitlines() if line.startswith("crs:")]
    assert crt and crt[0].split(":")[1] not in ("i", "r", "e"), listing


@pytest.mark.parametrize("signer", ["bob", "alice"])
def test_gpgsm_verifies_our_opaque_signature(imported: Env, signer: str) -> None:
    env = imported
    p12 = env.bob_p12 if signer == "bob" else env.alice_p12
    source = write(
        env,
        "plain",
        PLAIN if signer == "bob" else PLAIN.replace(b"Bob Builder <bob", b"Alice <alice"),
    )
    signed = fresh(env, "opaque")
    result = mailpki(
        "mail", "sign", "--p12", p12, "--password-file", env.password, "--opaque", source, signed
    )
    assert result.code == 0, result.err
    p7m = write(env, "opaque", payload(signed), ".p7m")
    out = fresh(env, "content", ".txt")
    proc = env.gpgsm("--verify", "--output", out, p7m)
    assert proc.returncode == 0, status(proc)
    assert "[GNUPG:] GOODSIG" in status(proc) and "[GNUPG:] VALIDSIG" in status(proc)
    assert "BADSIG" not in status(proc) and "ERRSIG" not in status(proc)
    assert "TRUST_FULLY" in status(proc) or "TRUST_ULTIMATE" in status(proc), status(proc)
    assert b"this goes through gpgsm.\r\n" in out.read_bytes()


def test_gpgsm_verifies_our_detached_signature(imported: Env) -> None:
    env = imported
    signed = fresh(env, "detached")
    result = mailpki(
        "mail", "sign", "--p12", env.bob_p12, "--password-file", env.password,
        write(env, "plain", PLAIN), signed,
    )  # fmt: skip
    assert result.code == 0, result.err
    content, signature = detached_parts(signed)
    assert content.startswith(b"Content-Type: text/plain")
    sig = write(env, "sig", signature, ".p7s")
    data = write(env, "content", content, ".txt")
    proc = env.gpgsm("--verify", sig, data)
    assert proc.returncode == 0, status(proc)
    assert "[GNUPG:] GOODSIG" in status(proc) and "[GNUPG:] VALIDSIG" in status(proc)
    assert "TRUST_FULLY" in status(proc) or "TRUST_ULTIMATE" in status(proc), status(proc)
    # One changed byte of the content and gpgsm says BADSIG, as do we.
    bad = write(env, "content", content.replace(b"Hello", b"Jello"), ".txt")
    proc = env.gpgsm("--verify", sig, bad)
    assert proc.returncode != 0
    assert "BADSIG" in status(proc)


def test_gpgsm_decrypts_our_mail(imported: Env) -> None:
    env = imported
    encrypted = fresh(env, "enc")
    result = mailpki(
        "mail", "encrypt", "--home", env.home, "--to", "alice@example.com",
        write(env, "plain", PLAIN), encrypted,
    )  # fmt: skip
    assert result.code == 0, result.err
    p7m = write(env, "enc", payload(encrypted), ".p7m")
    out = fresh(env, "dec", ".txt")
    proc = env.gpgsm_with_passphrase("--output", out, "--decrypt", p7m)
    assert proc.returncode == 0, status(proc)
    assert "DECRYPTION_OKAY" in status(proc)
    plain = out.read_bytes()
    assert plain.startswith(b"Content-Type: text/plain")
    assert b"this goes through gpgsm.\r\n" in plain


def test_gpgsm_decrypts_our_sign_encrypt_and_verifies_inside(imported: Env) -> None:
    env = imported
    encrypted = fresh(env, "signenc")
    result = mailpki(
        "mail", "sign-encrypt", "--home", env.home, "--p12", env.bob_p12,
        "--password-file", env.password, "--to", "alice@example.com",
        write(env, "plain", PLAIN), encrypted,
    )  # fmt: skip
    assert result.code == 0, result.err
    p7m = write(env, "signenc", payload(encrypted), ".p7m")
    inner = fresh(env, "inner")
    proc = env.gpgsm_with_passphrase("--output", inner, "--decrypt", p7m)
    # The message is also encrypted to Bob (the sender's copy), whose key this gpgsm
    # lacks: gpgsm 2.2 decrypts with Alice's key but, when Bob's RecipientInfo comes
    # first, still exits 2 ("No secret key"). DECRYPTION_OKAY is what counts.
    assert "[GNUPG:] DECRYPTION_OKAY" in status(proc), status(proc)
    assert proc.returncode == 0 or "No secret key" in status(proc), status(proc)
    # The decrypted entity is a multipart/signed one: put From in front and check it.
    message = write(env, "inner", b"From: bob@example.com\r\n" + inner.read_bytes())
    content, signature = detached_parts(message)
    proc = env.gpgsm(
        "--verify", write(env, "sig", signature, ".p7s"), write(env, "c", content, ".txt")
    )
    assert proc.returncode == 0 and "GOODSIG" in status(proc), status(proc)
    assert valid(verify(env, message))


# -- we read what gpgsm writes ---------------------------------------------------------------


HEADERS = (
    b"From: Alice Archer <alice@example.com>\r\nTo: bob@example.com\r\nSubject: from gpgsm\r\n"
)


def test_we_verify_gpgsm_opaque_signature(imported: Env) -> None:
    env = imported
    source = write(env, "content", CONTENT, ".txt")
    p7m = fresh(env, "gsigned", ".p7m")
    proc = env.gpgsm_with_passphrase("-u", "alice@example.com", "--output", p7m, "--sign", source)
    assert proc.returncode == 0, status(proc)
    der = p7m.read_bytes()
    assert der[:2] == b"\x30\x80"  # gpgsm writes indefinite-length BER
    message = write(
        env,
        "gsigned",
        HEADERS + b"MIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(der),
    )
    out = fresh(env, "verified")
    result = verify(env, message, "--out", out)
    assert valid(result), result.out + result.err
    assert "Alice Archer" in result.out
    assert out.read_bytes().endswith(b"\r\n\r\nHello from gpgsm\r\nsecond line\r\n")
    # And From someone else is refused.
    spoofed = write(
        env,
        "spoofed",
        message.read_bytes().replace(b"alice@example.com>", b"carol@example.com>", 1),
    )
    result = verify(env, spoofed)
    assert result.code == 1 and not valid(result)


def test_we_verify_gpgsm_detached_signature(imported: Env) -> None:
    env = imported
    source = write(env, "content", CONTENT, ".txt")
    p7s = fresh(env, "gsig", ".p7s")
    proc = env.gpgsm_with_passphrase(
        "-u", "alice@example.com", "--output", p7s, "--detach-sign", source
    )
    assert proc.returncode == 0, status(proc)
    boundary = b"gpgsm-boundary-42"
    body = (
        b"This is a signed message\r\n\r\n--" + boundary + b"\r\n" + CONTENT
        + b"\r\n--" + boundary + b"\r\n"
        b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(p7s.read_bytes())
        + b"\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip
    message = write(
        env,
        "gdetached",
        HEADERS + b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        b'micalg=sha-256; boundary="' + boundary + b'"\r\n\r\n' + body,
    )
    result = verify(env, message)
    assert valid(result), result.out + result.err
    # With LF line ends (as a Unix mail store keeps it) it still verifies: canonical form.
    lf = write(env, "gdetached-lf", message.read_bytes().replace(b"\r\n", b"\n"))
    assert valid(verify(env, lf))
    tampered = write(env, "gtampered", message.read_bytes().replace(b"second line", b"second lime"))
    result = verify(env, tampered)
    assert result.code != 0 and not valid(result)


@pytest.mark.parametrize(
    ("algo", "cipher"),
    [(None, "aes128-cbc"), ("AES256", "aes256-cbc"), ("3DES", "des-ede3-cbc")],
    ids=["default", "aes256", "3des"],
)
def test_we_decrypt_gpgsm_encryption(imported: Env, algo: str | None, cipher: str) -> None:
    env = imported
    source = write(env, "content", CONTENT, ".txt")
    p7m = fresh(env, "genc", ".p7m")
    options = ["--cipher-algo", algo] if algo else []
    proc = env.gpgsm(*options, "-r", "alice@example.com", "--output", p7m, "--encrypt", source)
    assert proc.returncode == 0, status(proc)
    der = p7m.read_bytes()
    assert der[:2] == b"\x30\x80"  # BER
    message = write(
        env,
        "genc",
        HEADERS + b"MIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(der),
    )
    out = fresh(env, "gdec")
    result = mailpki(
        "mail", "decrypt", "--p12", env.alice_p12, "--password-file", env.password, message, out
    )
    assert result.code == 0, result.err
    assert f"({cipher}, key transport pkcs1v15)" in result.err
    opened = out.read_bytes()
    assert b"Subject: from gpgsm" in opened
    assert opened.endswith(b"\r\n\r\nHello from gpgsm\r\nsecond line\r\n")
    # Bob is not a recipient: a clear error.
    bob_out = fresh(env, "gdec")
    result = mailpki(
        "mail", "decrypt", "--p12", env.bob_p12, "--password-file", env.password, message, bob_out
    )
    assert result.code != 0
    assert result.err.startswith("error:")
    assert not bob_out.exists()


def test_we_decrypt_then_verify_gpgsm_sign_and_encrypt(imported: Env) -> None:
    """gpgsm signs (opaque), we wrap it as a message, gpgsm encrypts that to Alice."""
    env = imported
    source = write(env, "content", CONTENT, ".txt")
    signed = fresh(env, "gs", ".p7m")
    proc = env.gpgsm_with_passphrase(
        "-u", "alice@example.com", "--output", signed, "--sign", source
    )
    assert proc.returncode == 0, status(proc)
    entity = write(
        env,
        "gs-entity",
        b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(signed.read_bytes()),
        ".txt",
    )
    enveloped = fresh(env, "gse", ".p7m")
    proc = env.gpgsm("-r", "alice@example.com", "--output", enveloped, "--encrypt", entity)
    assert proc.returncode == 0, status(proc)
    message = write(
        env,
        "gse",
        HEADERS + b"MIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(enveloped.read_bytes()),
    )
    opened = fresh(env, "gse-opened")
    result = mailpki(
        "mail", "decrypt", "--p12", env.alice_p12, "--password-file", env.password, message, opened
    )
    assert result.code == 0, result.err
    result = verify(env, opened)
    assert valid(result), result.out + result.err


# -- a clean import, and a reply to the right certificate -------------------------------------


@contextlib.contextmanager
def fresh_gnupghome(*trusted_roots: x509.Certificate) -> Iterator[Path]:
    """A GNUPGHOME of its own (no CA certificate imported beforehand), trusting
    `trusted_roots`; the gpg-agent it starts is stopped at the end."""
    gnupghome = Path(tempfile.mkdtemp(prefix="gh-", dir="/tmp"))
    gnupghome.chmod(0o700)
    (gnupghome / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    (gnupghome / "gpgsm.conf").write_text("disable-crl-checks\ndisable-dirmngr\n")
    (gnupghome / "trustlist.txt").write_text(
        "".join(
            f"{root.fingerprint(hashes.SHA1()).hex(':').upper()} S relax\n"
            for root in trusted_roots
        )
    )
    try:
        yield gnupghome
    finally:
        subprocess.run(
            ["gpgconf", "--kill", "all"],
            env={**os.environ, "GNUPGHOME": str(gnupghome)},
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(gnupghome, ignore_errors=True)


def test_gpgsm_imports_our_legacy_pkcs12_cleanly_into_an_empty_keybox(env: Env) -> None:
    """The person's certificate comes after its issuers in the file, so gpgsm finds
    each issuer as it imports: no "issuer certificate not found", exit 0."""
    root = x509.load_pem_x509_certificate((env.home / "ca" / "root.pem").read_bytes())
    with fresh_gnupghome(root) as empty:
        proc = subprocess.run(
            [str(GPGSM), "--batch", "--status-fd", "2", "--pinentry-mode", "loopback",
             "--passphrase-fd", "0", "--import", str(env.alice_p12)],
            input=PASSWORD.encode() + b"\n",
            capture_output=True,
            env={**os.environ, "GNUPGHOME": str(empty)},
            timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, status(proc)
        assert "not found" not in status(proc), status(proc)
        assert "secret keys imported: 1" in status(proc)
        assert "imported: 3" in status(proc)  # root, issuing CA, Alice


def test_gpgsm_encrypts_a_reply_to_the_encryption_half_of_a_dual_key(env: Env) -> None:
    """Dan signs with his signing-only certificate; the signature names and carries his
    encryption certificate. gpgsm, having verified the mail, holds both halves; it does
    not read the preference itself (by address it may answer "Ambiguous name"), so the
    reply goes to the certificate `mail verify --json` names, and mailpki decrypts it
    with the encryption key. The signing half gpgsm refuses for encryption."""
    root, root_key = root_ca("Dual Root", organisation="Dual Org")
    sign_cert, sign_key = smime_leaf(
        root, root_key, mail="dan@dual.test", name="Dan S", usage="sign"
    )
    enc_cert, enc_key = smime_leaf(
        root, root_key, mail="dan@dual.test", name="Dan E", usage="encrypt"
    )
    password = PASSWORD.encode()
    sign_p12 = write(
        env,
        "dan-sign",
        build_pkcs12(sign_key, sign_cert, [root], password, friendly_name="s"),
        ".p12",
    )
    enc_p12 = write(
        env, "dan-enc", build_pkcs12(enc_key, enc_cert, [root], password, friendly_name="e"), ".p12"
    )
    enc_pem = write(env, "dan-enc", enc_cert.public_bytes(serialization.Encoding.PEM), ".pem")
    root_pem = write(env, "dual-root", root.public_bytes(serialization.Encoding.PEM), ".pem")
    plain = write(env, "plain", b"From: dan@dual.test\r\nTo: bob@example.com\r\n\r\nhello\r\n")
    signed = fresh(env, "dual")
    result = mailpki(
        "mail", "sign", plain, signed, "--p12", sign_p12, "--password-file", env.password,
        "--encryption-cert", enc_pem,
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(mailpki("mail", "verify", signed, "--trust", root_pem, "--json").out)
    named = report["encryption_certificate"]
    assert named["serial"] == show_serial(enc_cert.serial_number) and named["is_signer"] is False
    content, signature = detached_parts(signed)
    with fresh_gnupghome(root) as reader:
        gpg_env = {**os.environ, "GNUPGHOME": str(reader)}

        def gpgsm(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [str(GPGSM), "--batch", "--status-fd", "2", *map(str, args)],
                capture_output=True, env=gpg_env, timeout=120,
            )  # fmt: skip

        checked = gpgsm(
            "--verify", write(env, "sig", signature, ".p7s"), write(env, "c", content, ".txt")
        )
        assert checked.returncode == 0 and "GOODSIG" in status(checked), status(checked)
        source = write(env, "r", CONTENT, ".txt")
        by_address_out = fresh(env, "x", ".p7m")
        by_address = gpgsm("--output", by_address_out, "--encrypt", "-r", "dan@dual.test", source)
        # By address, gpgsm 2.2 takes the first certificate in its keybox: the signing
        # half it skips as unusable, the encryption half it takes, unless the signing
        # half follows, and then it answers "Ambiguous name". Never the signing half.
        if by_address.returncode == 0:
            by_address_info = cms.ContentInfo.load(definite_lengths(by_address_out.read_bytes()))
            assert [
                ri.chosen["rid"].chosen["serial_number"].native
                for ri in by_address_info["content"]["recipient_infos"]
            ] == [enc_cert.serial_number]
        else:
            assert "Ambiguous name" in status(by_address), status(by_address)
        signing_half = gpgsm(
            "--output", fresh(env, "x", ".p7m"), "--encrypt",
            "-r", sign_cert.fingerprint(hashes.SHA1()).hex(), source,
        )  # fmt: skip
        assert signing_half.returncode != 0, status(signing_half)
        reply = fresh(env, "reply", ".p7m")
        named_fpr = x509.load_pem_x509_certificate(enc_pem.read_bytes()).fingerprint(hashes.SHA1())
        encrypted = gpgsm("--output", reply, "--encrypt", "-r", named_fpr.hex(), source)
        assert encrypted.returncode == 0, status(encrypted)
    info = cms.ContentInfo.load(definite_lengths(reply.read_bytes()))
    serials = [
        ri.chosen["rid"].chosen["serial_number"].native for ri in info["content"]["recipient_infos"]
    ]
    assert serials == [enc_cert.serial_number]
    message = write(
        env,
        "reply",
        b"From: bob@example.com\r\nTo: dan@dual.test\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(reply.read_bytes()),
    )
    out = fresh(env, "reply-clear")
    opened = mailpki(
        "mail", "decrypt", message, out, "--p12", enc_p12, "--password-file", env.password
    )
    assert opened.code == 0, opened.err
    assert b"Hello from gpgsm" in out.read_bytes()
