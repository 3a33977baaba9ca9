"""The S/MIME toolkit (`mailpki mail ...`) against the real `openssl cms`, both ways.

- openssl verifies what we sign (multipart/signed and opaque; 8-bit UTF-8 text; a
  multipart/mixed message with an attachment) and decrypts what we encrypt (AES-CBC,
  RSA-OAEP, AES-GCM, sign-encrypt);
- we verify what openssl signs (detached, -nodetach, -binary, -stream BER, RSA-PSS, an
  EC signer) and decrypt what openssl encrypts (AES-CBC/GCM, OAEP with SHA-1 and
  SHA-256, 3DES, -stream BER, several recipients);
- verification failures exit non-zero with the reason and never print VALID.
"""

from __future__ import annotations

import datetime as dt
import email
import re
import shutil
import subprocess
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.fixtures.smime_pki import root_ca, smime_leaf
from tests.integration.cli_helpers import Result, mailpki, openssl

pytestmark = pytest.mark.integration

if not shutil.which("openssl"):  # pragma: no cover - the CI test command installs it
    pytest.skip("openssl is not installed", allow_module_level=True)

PASSWORD = "correct horse battery staple 42"
PLAIN = (
    b"From: Bob Builder <bob@example.com>\n"
    b"To: Alice Archer <alice@example.com>\n"
    b"Subject: quarterly numbers\n"
    b"Date: Tue, 24 Nov 2026 10:00:00 +0000\n"
    b"\n"
    b"Hello Alice,\n"
    b"the numbers are attached.\n"
    b"-- \n"
    b"Bob\n"
)
INNER = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nHello from openssl\r\nline two\r\n"


@dataclass(frozen=True)
class Person:
    email: str
    p12: Path
    key: Path
    cert: Path
    serial: str


@dataclass(frozen=True)
class Env:
    home: Path
    work: Path
    password: Path
    bob: Person  # RSA-2048
    alice: Person  # RSA-2048, legacy PKCS#12
    eve: Person  # P-256
    root: Path
    issuing: Path


def init(home: Path, org: str, domain: str = "example.com") -> None:
    result = mailpki(
        "init", "--home", home, "--org", org, "--domain", domain,
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    )  # fmt: skip
    assert result.code == 0, result.err


def enroll(home: Path, work: Path, password: Path, address: str, name: str, *extra: str) -> Person:
    local = address.split("@")[0]
    p12 = work / f"{local}.p12"
    result = mailpki(
        "enroll", "--home", home, "--email", address, "--name", name,
        "--out", p12, "--password-file", password, *extra,
    )  # fmt: skip
    assert result.code == 0, result.err
    match = re.search(r"certificate ([0-9A-F]+)", result.out + result.err)
    assert match, result.out + result.err
    key, cert = work / f"{local}.key", work / f"{local}.pem"
    openssl("pkcs12", "-in", p12, "-passin", f"file:{password}", "-nodes", "-nocerts", "-out", key)
    openssl(
        "pkcs12", "-in", p12, "-passin", f"file:{password}", "-clcerts", "-nokeys", "-out", cert
    )
    return Person(address, p12, key, cert, match.group(1))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    work = tmp_path_factory.mktemp("smime-openssl")
    home = work / "corp"
    init(home, "Example Corp")
    password = work / "pw"
    password.write_text(PASSWORD + "\n")
    bob = enroll(home, work, password, "bob@example.com", "Bob Builder")
    alice = enroll(home, work, password, "alice@example.com", "Alice Archer", "--legacy-p12")
    eve = enroll(home, work, password, "eve@example.com", "Eve Ellis", "--key-type", "p256")
    return Env(
        home, work, password, bob, alice, eve, home / "ca" / "root.pem", home / "ca" / "issuing.pem"
    )


_counter = iter(range(1_000_000))


def fresh(env: Env, stem: str) -> Path:
    return env.work / f"{stem}-{next(_counter)}.eml"


def write(env: Env, stem: str, data: bytes) -> Path:
    path = fresh(env, stem)
    path.write_bytes(data)
    return path


def verify(env: Env, path: Path, *extra: str | Path) -> Result:
    return mailpki("mail", "verify", path, "--home", env.home, *extra)


def is_valid_output(result: Result) -> bool:
    return any(line.strip() == "VALID" for line in result.out.splitlines())


def assert_valid(result: Result) -> None:
    assert result.code == 0, result.out + result.err
    assert is_valid_output(result), result.out


def assert_not_valid(result: Result, reason: str) -> None:
    assert result.code != 0, result.out + result.err
    assert not is_valid_output(result), result.out
    assert re.search(reason, result.out + result.err, re.IGNORECASE), result.out + result.err


def sign(env: Env, person: Person, message: Path, *extra: str) -> Path:
    out = fresh(env, "signed")
    result = mailpki(
        "mail", "sign", "--p12", person.p12, "--password-file", env.password, *extra, message, out
    )
    assert result.code == 0, result.err
    return out


def encrypt(env: Env, message: Path, *extra: str) -> Path:
    out = fresh(env, "enc")
    result = mailpki(
        "mail", "encrypt", "--home", env.home, "--to", env.alice.email, *extra, message, out
    )
    assert result.code == 0, result.err
    return out


def openssl_verify(env: Env, path: Path, *extra: str) -> bytes:
    out = env.work / f"ossl-verified-{next(_counter)}"
    openssl(
        "cms", "-verify", "-in", path, "-CAfile", env.root, "-certfile", env.issuing,
        "-purpose", "smimesign", "-out", out, *extra,
    )  # fmt: skip
    return out.read_bytes()


def openssl_decrypt(env: Env, path: Path, person: Person) -> bytes:
    out = env.work / f"ossl-decrypted-{next(_counter)}"
    openssl(
        "cms", "-decrypt", "-in", path, "-inkey", person.key, "-recip", person.cert, "-out", out
    )
    return out.read_bytes()


def body_text(message: bytes) -> str:
    parsed = email.message_from_bytes(message, policy=policy.default)
    part = parsed.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


# -- openssl reads what we write ---------------------------------------------------------


def test_openssl_verifies_our_multipart_signed(env: Env) -> None:
    signed = sign(env, env.bob, write(env, "plain", PLAIN))
    data = signed.read_bytes()
    assert b"multipart/signed" in data and b"From: Bob Builder <bob@example.com>" in data
    content = openssl_verify(env, signed)
    assert b"the numbers are attached." in content
    assert_valid(verify(env, signed))


def test_openssl_verifies_our_opaque_signature(env: Env) -> None:
    signed = sign(env, env.bob, write(env, "plain", PLAIN), "--opaque")
    assert b"smime-type=signed-data" in signed.read_bytes()
    content = openssl_verify(env, signed)
    assert b"the numbers are attached." in content
    assert_valid(verify(env, signed))


@pytest.mark.parametrize("opaque", [(), ("--opaque",)])
def test_openssl_verifies_our_rsa_pss_signature(env: Env, opaque: tuple[str, ...]) -> None:
    signed = sign(env, env.bob, write(env, "plain", PLAIN), "--pss", *opaque)
    assert b"the numbers are attached." in openssl_verify(env, signed)
    printed = subprocess.run(
        ["openssl", "cms", "-cmsout", "-print", "-in", str(signed)],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    assert "rsassaPss" in printed
    assert_valid(verify(env, signed))


def test_pss_with_an_ec_key_is_refused(env: Env) -> None:
    message = write(env, "plain", PLAIN.replace(b"Bob Builder <bob@", b"Eve Ellis <eve@"))
    result = mailpki(
        "mail", "sign", "--pss", "--p12", env.eve.p12, "--password-file", env.password,
        message, fresh(env, "signed"),
    )  # fmt: skip
    assert result.code == 2 and "PSS is an RSA signature scheme" in result.err


def test_openssl_verifies_our_ec_signature(env: Env) -> None:
    message = PLAIN.replace(b"Bob Builder <bob@", b"Eve Ellis <eve@")
    signed = sign(env, env.eve, write(env, "plain", message))
    assert b"the numbers are attached." in openssl_verify(env, signed)
    assert_valid(verify(env, signed))


def test_openssl_verifies_8bit_utf8_body(env: Env) -> None:
    text = "Grüße aus Köln – naïve café, 東京, 🙂\nzweite Zeile\n"
    head = (
        b"From: bob@example.com\nTo: alice@example.com\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n"
        b"Content-Type: text/plain; charset=utf-8\n"
    )
    # Without a Content-Transfer-Encoding the 8-bit body is carried as base64; with
    # "8bit" it is signed as it is.
    for cte in (b"", b"Content-Transfer-Encoding: 8bit\n"):
        message = head + cte + b"\n" + text.encode("utf-8")
        for extra in ((), ("--opaque",)):
            signed = sign(env, env.bob, write(env, "utf8", message), *extra)
            if not cte:
                assert all(b < 0x80 for b in signed.read_bytes())
            content = openssl_verify(env, signed)
            assert body_text(b"From: x@example.com\r\n" + content) == text
            out = fresh(env, "verified")
            assert_valid(verify(env, signed, "--out", out))
            assert body_text(out.read_bytes()) == text


def test_openssl_verifies_multipart_mixed_with_attachment(env: Env) -> None:
    attachment = bytes(range(256)) * 40 + b"\x00\r\n\n\r"
    composed = EmailMessage()
    composed["From"] = "bob@example.com"
    composed["To"] = "alice@example.com"
    composed["Subject"] = "with attachment"
    composed.set_content("See the attachment.\n")
    composed.add_attachment(
        attachment, maintype="application", subtype="octet-stream", filename="blob.bin"
    )
    source = write(env, "mixed", composed.as_bytes())
    for extra in ((), ("--opaque",)):
        signed = sign(env, env.bob, source, *extra)
        content = openssl_verify(env, signed)
        inner = email.message_from_bytes(content, policy=policy.default)
        assert inner.get_content_type() == "multipart/mixed"
        [part] = list(inner.iter_attachments())  # type: ignore[attr-defined]
        assert part.get_filename() == "blob.bin"
        assert part.get_content() == attachment
        out = fresh(env, "verified")
        assert_valid(verify(env, signed, "--out", out))
        again = email.message_from_bytes(out.read_bytes(), policy=policy.default)
        [part] = list(again.iter_attachments())  # type: ignore[attr-defined]
        assert part.get_content() == attachment


@pytest.mark.parametrize(
    ("options", "marker"),
    [
        ((), b"smime-type=enveloped-data"),
        (("--oaep",), b"smime-type=enveloped-data"),
        (("--cipher", "aes256-gcm"), b"smime-type=authEnveloped-data"),
        (("--cipher", "aes256-gcm", "--oaep"), b"smime-type=authEnveloped-data"),
    ],
    ids=["cbc", "oaep", "gcm", "gcm-oaep"],
)
def test_openssl_decrypts_our_mail(env: Env, options: tuple[str, ...], marker: bytes) -> None:
    encrypted = encrypt(env, write(env, "plain", PLAIN), *options)
    data = encrypted.read_bytes()
    assert marker in data
    assert b"the numbers are attached." not in data
    assert b"Subject: quarterly numbers" in data  # transport headers stay outside
    content = openssl_decrypt(env, encrypted, env.alice)
    assert content.startswith(b"Content-Type: text/plain")
    assert b"the numbers are attached.\r\n" in content
    # and we read it back ourselves
    out = fresh(env, "decrypted")
    result = mailpki(
        "mail", "decrypt", "--p12", env.alice.p12, "--password-file", env.password, encrypted, out
    )
    assert result.code == 0, result.err
    assert body_text(out.read_bytes()) == "Hello Alice,\nthe numbers are attached.\n-- \nBob\n"


@pytest.mark.parametrize("cipher", ["aes256-cbc", "aes256-gcm"])
def test_openssl_decrypts_sign_encrypt_and_verifies_inside(env: Env, cipher: str) -> None:
    out = fresh(env, "signenc")
    result = mailpki(
        "mail", "sign-encrypt", "--home", env.home, "--p12", env.bob.p12,
        "--password-file", env.password, "--to", env.alice.email, "--cipher", cipher,
        write(env, "plain", PLAIN), out,
    )  # fmt: skip
    assert result.code == 0, result.err
    # Alice opens it, and so does Bob (his sent copy).
    for person in (env.alice, env.bob):
        inner = openssl_decrypt(env, out, person)
        assert b"multipart/signed" in inner
        signed = write(env, "inner", b"From: bob@example.com\r\n" + inner)
        assert b"the numbers are attached." in openssl_verify(env, signed)
    # Our own round trip: decrypt, then verify.
    opened = fresh(env, "opened")
    result = mailpki(
        "mail", "decrypt", "--p12", env.alice.p12, "--password-file", env.password, out, opened
    )
    assert result.code == 0, result.err
    assert_valid(verify(env, opened))


# -- we read what openssl writes ---------------------------------------------------------


def openssl_sign(env: Env, person: Person, content: bytes, *options: str) -> Path:
    source = env.work / f"inner-{next(_counter)}.txt"
    source.write_bytes(content)
    out = fresh(env, "ossl-signed")
    openssl(
        "cms", "-sign", "-in", source, "-signer", person.cert, "-inkey", person.key,
        "-certfile", env.issuing, "-from", person.email, "-to", env.alice.email,
        "-subject", "from openssl", "-out", out, *options,
    )  # fmt: skip
    return out


@pytest.mark.parametrize(
    "options",
    [
        (),
        ("-nodetach",),
        ("-stream",),
        ("-nodetach", "-stream"),
        ("-keyopt", "rsa_padding_mode:pss"),
        ("-nodetach", "-keyopt", "rsa_padding_mode:pss"),
        ("-md", "sha512"),
        ("-nocerts",),  # no certificates in the message; intermediate and leaf missing
    ],
    ids=["detached", "nodetach", "stream", "nodetach-stream", "pss", "nodetach-pss", "sha512",
         "nocerts"],
)  # fmt: skip
def test_we_verify_openssl_signatures(env: Env, options: tuple[str, ...]) -> None:
    signed = openssl_sign(env, env.bob, INNER.replace(b"\r\n", b"\n"), *options)
    if "-nocerts" in options:
        # Without the signer's certificate nothing can be verified: a clear error.
        result = verify(env, signed)
        assert_not_valid(result, r"certificate|signer")
        return
    out = fresh(env, "verified")
    result = verify(env, signed, "--out", out)
    assert_valid(result)
    assert "Bob Builder" in result.out
    verified = out.read_bytes()
    assert b"From: bob@example.com" in verified
    assert b"Hello from openssl\r\nline two\r\n" in verified


def test_we_verify_openssl_binary_signature_of_canonical_content(env: Env) -> None:
    # -binary signs the bytes as they are: given CRLF text, that is the canonical form.
    signed = openssl_sign(env, env.bob, INNER, "-binary")
    assert_valid(verify(env, signed))
    signed = openssl_sign(env, env.bob, INNER, "-binary", "-nodetach")
    assert_valid(verify(env, signed))


def test_we_verify_openssl_ec_signature(env: Env) -> None:
    for options in ((), ("-nodetach",)):
        signed = openssl_sign(env, env.eve, INNER, *options)
        result = verify(env, signed)
        assert_valid(result)
        assert "Eve Ellis" in result.out


def test_we_verify_openssl_signature_with_headers_prepended(env: Env) -> None:
    # openssl without -from/-to/-subject writes no transport headers: add them ourselves.
    source = env.work / "inner-nohdr.txt"
    source.write_bytes(INNER)
    bare = env.work / "bare.eml"
    openssl(
        "cms", "-sign", "-in", source, "-signer", env.bob.cert, "-inkey", env.bob.key,
        "-certfile", env.issuing, "-out", bare,
    )  # fmt: skip
    # Without a From header the signature verifies but the message is not valid.
    assert_not_valid(verify(env, bare), "no From address")
    headed = write(
        env,
        "headed",
        b"From: bob@example.com\nTo: alice@example.com\nSubject: hi\n" + bare.read_bytes(),
    )
    assert_valid(verify(env, headed))


def openssl_encrypt(env: Env, recipients: list[Person], *options: str) -> Path:
    source = env.work / f"plain-{next(_counter)}.txt"
    source.write_bytes(INNER)
    out = fresh(env, "ossl-enc")
    recips: list[str] = []
    keyopts = [o for o in options if o.startswith("rsa_")]
    for person in recipients:
        recips += ["-recip", str(person.cert)]
        for opt in keyopts:  # -keyopt applies to the -recip before it
            recips += ["-keyopt", opt]
    plain = [o for o in options if not o.startswith("rsa_")]
    openssl(
        "cms", "-encrypt", "-in", source, "-from", env.bob.email, "-to", env.alice.email,
        "-subject", "secret", "-out", out, *plain, *recips,
    )  # fmt: skip
    return out


def our_decrypt(env: Env, path: Path, person: Person) -> Result:
    out = fresh(env, "decrypted")
    result = mailpki(
        "mail", "decrypt", "--p12", person.p12, "--password-file", env.password, path, out
    )
    if result.code == 0:
        result.out = out.read_bytes().decode("utf-8")
    return result


@pytest.mark.parametrize(
    ("options", "cipher", "transport"),
    [
        (("-aes-256-cbc",), "aes256-cbc", "pkcs1v15"),
        (("-aes-128-cbc",), "aes128-cbc", "pkcs1v15"),
        (("-aes-256-gcm",), "aes256-gcm", "pkcs1v15"),
        (("-aes-256-cbc", "rsa_padding_mode:oaep"), "aes256-cbc", "oaep"),
        (("-aes-256-cbc", "rsa_padding_mode:oaep", "rsa_oaep_md:sha256"), "aes256-cbc", "oaep"),
        (("-aes-256-gcm", "rsa_padding_mode:oaep", "rsa_oaep_md:sha256"), "aes256-gcm", "oaep"),
        (("-des3",), "des-ede3-cbc", "pkcs1v15"),
        (("-aes-256-cbc", "-stream"), "aes256-cbc", "pkcs1v15"),
        (("-des3", "-stream"), "des-ede3-cbc", "pkcs1v15"),
    ],
    ids=["aes256-cbc", "aes128-cbc", "aes256-gcm", "oaep-sha1", "oaep-sha256",
         "gcm-oaep-sha256", "des3", "cbc-stream", "des3-stream"],
)  # fmt: skip
def test_we_decrypt_openssl_mail(
    env: Env, options: tuple[str, ...], cipher: str, transport: str
) -> None:
    encrypted = openssl_encrypt(env, [env.alice], *options)
    result = our_decrypt(env, encrypted, env.alice)
    assert result.code == 0, result.err
    assert f"({cipher}, key transport {transport})" in result.err
    assert "Subject: secret" in result.out
    assert result.out.endswith("\r\n\r\nHello from openssl\r\nline two\r\n")


def test_we_decrypt_openssl_mail_to_several_recipients(env: Env) -> None:
    encrypted = openssl_encrypt(env, [env.bob, env.alice], "-aes-256-cbc")
    for person in (env.alice, env.bob):
        result = our_decrypt(env, encrypted, person)
        assert result.code == 0, result.err
        assert "Hello from openssl" in result.out
    # Eve is not a recipient: a clear error, not a crash.
    result = our_decrypt(env, encrypted, env.eve)
    assert result.code != 0
    assert result.err.startswith("error:"), result.err


@pytest.mark.parametrize("cipher", ["-aes-256-cbc", "-aes-256-gcm"])
def test_we_decrypt_openssl_mail_to_an_ec_recipient(env: Env, cipher: str) -> None:
    # openssl encrypts to a P-256 certificate with ECDH (KeyAgreeRecipientInfo).
    encrypted = openssl_encrypt(env, [env.eve, env.alice], cipher)
    for person in (env.eve, env.alice):
        result = our_decrypt(env, encrypted, person)
        assert result.code == 0, result.err
        assert result.out.endswith("\r\n\r\nHello from openssl\r\nline two\r\n")


@pytest.mark.parametrize("cipher", ["aes256-cbc", "aes256-gcm"])
def test_openssl_decrypts_our_mail_to_an_ec_recipient(env: Env, cipher: str) -> None:
    out = fresh(env, "enc-ec")
    result = mailpki(
        "mail", "encrypt", "--home", env.home, "--to", env.eve.email, "--to", env.alice.email,
        "--cipher", cipher, write(env, "plain", PLAIN), out,
    )  # fmt: skip
    assert result.code == 0, result.err
    for person in (env.eve, env.alice):
        content = openssl_decrypt(env, out, person)
        assert b"the numbers are attached.\r\n" in content


def test_decrypt_not_for_us_is_a_clear_error(env: Env) -> None:
    encrypted = openssl_encrypt(env, [env.alice], "-aes-256-cbc")
    result = our_decrypt(env, encrypted, env.bob)
    assert result.code != 0
    assert result.err.startswith("error:"), result.err
    assert "Traceback" not in result.err


# -- verification failures -----------------------------------------------------------------


def test_body_modified_after_signing(env: Env) -> None:
    for extra in ((), ("--opaque",)):
        signed = sign(env, env.bob, write(env, "plain", PLAIN), *extra)
        data = signed.read_bytes()
        if extra:
            # In an opaque message the content is inside the base64: flip a byte of it.
            parsed = email.message_from_bytes(data, policy=policy.default)
            der = bytearray(parsed.get_payload(decode=True))  # type: ignore[arg-type]
            at = bytes(der).find(b"numbers are attached")
            assert at > 0
            der[at] ^= 0x01
            import base64

            head = data.split(b"\r\n\r\n", 1)[0]
            tampered = head + b"\r\n\r\n" + base64.encodebytes(bytes(der))
        else:
            tampered = data.replace(b"the numbers are attached.", b"the numbers are attacked.")
        assert tampered != data
        result = verify(env, write(env, "tampered", tampered))
        assert_not_valid(result, r"does not match|signature")


def test_body_modified_exits_1(env: Env) -> None:
    signed = sign(env, env.bob, write(env, "plain", PLAIN))
    tampered = signed.read_bytes().replace(b"Hello Alice", b"Hello Mallory")
    assert verify(env, write(env, "tampered", tampered)).code == 1


def test_from_of_someone_else(env: Env) -> None:
    signed = sign(env, env.bob, write(env, "plain", PLAIN))
    data = signed.read_bytes().replace(
        b"From: Bob Builder <bob@example.com>", b"From: Carol <carol@example.com>"
    )
    result = verify(env, write(env, "spoofed", data))
    assert result.code == 1
    assert_not_valid(result, r"not carol@example\.com")
    # Two From addresses (one of them right) are not valid either.
    data = signed.read_bytes().replace(
        b"From: Bob Builder <bob@example.com>", b"From: bob@example.com, carol@example.com"
    )
    result = verify(env, write(env, "twofrom", data))
    assert result.code == 1
    assert_not_valid(result, r"several From")


def test_revoked_signer(env: Env) -> None:
    dan = enroll(env.home, env.work, env.password, "dan@example.com", "Dan Dunn")
    signed = sign(env, dan, write(env, "dan", PLAIN.replace(b"Bob Builder <bob@", b"Dan <dan@")))
    assert_valid(verify(env, signed))
    result = mailpki("ca", "revoke", "--home", env.home, dan.serial, "--reason", "keyCompromise")
    assert result.code == 0, result.err
    result = verify(env, signed)
    assert result.code == 1
    assert_not_valid(result, r"revoked")
    assert "revocation: revoked" in result.out
    result = verify(env, signed, "--json")
    assert result.code == 1
    import json

    report = json.loads(result.out)
    assert report["valid"] is False and report["revocation"] == "revoked"
    # openssl, which knows nothing of revocation here, still checks the signature.
    openssl_verify(env, signed)


def test_signer_from_untrusted_ca(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init(other, "Other Corp")
    mallory = enroll(other, tmp_path, env.password, "bob@example.com", "Bob Builder")
    signed = sign(env, mallory, write(env, "plain", PLAIN))
    result = verify(env, signed)
    assert result.code == 1
    assert_not_valid(result, r"no chain to a trusted root")
    # ... and with the other instance's root it is valid.
    result = mailpki("mail", "verify", signed, "--trust", other / "ca" / "root.pem")
    assert_valid(result)


def _self_made_ca(folder: Path, *, leaf_expired: bool) -> tuple[Path, Path, Path]:
    """A root and an RSA signer for bob@example.com (root.pem, leaf.pem, leaf.key)."""
    now = dt.datetime.now(dt.UTC)
    root, root_key = root_ca("Self-made Root")
    start, end = (
        (now - dt.timedelta(days=400), now - dt.timedelta(days=35))
        if leaf_expired
        else (now - dt.timedelta(days=1), now + dt.timedelta(days=365))
    )
    leaf, leaf_key = smime_leaf(
        root, root_key, mail="bob@example.com", name="Bob Builder", not_before=start, not_after=end
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "root.pem", folder / "leaf.pem", folder / "leaf.key"
    paths[0].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_expired_signer(env: Env, tmp_path: Path) -> None:
    for expired in (False, True):
        root, leaf, key = _self_made_ca(tmp_path / str(expired), leaf_expired=expired)
        source = tmp_path / f"inner-{expired}.txt"
        source.write_bytes(INNER)
        signed = tmp_path / f"signed-{expired}.eml"
        openssl(
            "cms", "-sign", "-in", source, "-signer", leaf, "-inkey", key,
            "-from", "bob@example.com", "-to", "alice@example.com", "-subject", "old",
            "-out", signed,
        )  # fmt: skip
        result = mailpki("mail", "verify", signed, "--trust", root)
        if not expired:
            assert_valid(result)  # the self-made CA itself is fine
        else:
            assert result.code == 1
            assert_not_valid(result, r"expired|not valid after|valid until")


def test_truncated_message(env: Env) -> None:
    for extra in ((), ("--opaque",)):
        data = sign(env, env.bob, write(env, "plain", PLAIN), *extra).read_bytes()
        for cut in (len(data) // 3, len(data) // 2, len(data) - 40, len(data) - 5):
            result = verify(env, write(env, "cut", data[:cut]))
            assert result.code != 0, (cut, result.out)
            assert not is_valid_output(result)
            # Either a verdict with its reason (exit 1) or a message that is not even a
            # signed message any more (a usage error, exit 2); never a traceback.
            assert "problem:" in result.out or result.err.startswith("error:"), result
            assert "Traceback" not in result.err + result.out


def test_encrypted_message_is_not_verified(env: Env) -> None:
    encrypted = encrypt(env, write(env, "plain", PLAIN))
    result = verify(env, encrypted)
    assert result.code != 0
    assert not is_valid_output(result)
    assert "decrypt" in result.err


def test_require_revocation_without_any_source(env: Env, tmp_path: Path) -> None:
    root, leaf, key = _self_made_ca(tmp_path / "ca", leaf_expired=False)
    source = tmp_path / "inner.txt"
    source.write_bytes(INNER)
    signed = tmp_path / "signed.eml"
    openssl(
        "cms", "-sign", "-in", source, "-signer", leaf, "-inkey", key,
        "-from", "bob@example.com", "-to", "alice@example.com", "-subject", "x", "-out", signed,
    )  # fmt: skip
    assert_valid(mailpki("mail", "verify", signed, "--trust", root))
    # The self-made certificate names no OCSP responder or CRL: unknown, which is a
    # problem only with --require-revocation.
    result = mailpki("mail", "verify", signed, "--trust", root, "--require-revocation")
    assert result.code == 1
    assert_not_valid(result, r"revocation")


def test_stdin_and_stdout(env: Env) -> None:
    """IN and OUT may be '-': sign from a pipe, verify from a pipe, decrypt to a pipe."""
    import subprocess
    import sys

    def run(*args: str | Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "mailpki", *map(str, args)],
            input=data,
            capture_output=True,
            timeout=120,
        )

    signed = run(
        "mail", "sign", "--p12", env.bob.p12, "--password-file", env.password, "-", "-",
        data=PLAIN,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith(b"From: Bob Builder <bob@example.com>\r\n")
    checked = run("mail", "verify", "-", "--home", env.home, data=signed.stdout)
    assert checked.returncode == 0, checked.stderr
    assert b"\nVALID\n" in checked.stdout
    path = write(env, "piped", signed.stdout)
    assert b"the numbers are attached." in openssl_verify(env, path)
    encrypted = run(
        "mail", "encrypt", "--home", env.home, "--to", env.alice.email, "-", "-", data=PLAIN
    )
    assert encrypted.returncode == 0, encrypted.stderr
    opened = run(
        "mail", "decrypt", "--p12", env.alice.p12, "--password-file", env.password, "-", "-",
        data=encrypted.stdout,
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.endswith(
        b"\r\n\r\nHello Alice,\r\nthe numbers are attached.\r\n-- \r\nBob\r\n"
    )


def recipient_count(path: Path) -> int:
    """How many RecipientInfos the enveloped message carries (openssl's own parse)."""
    printed = subprocess.run(
        ["openssl", "cms", "-cmsout", "-print", "-in", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return printed.count("d.ktri:") + printed.count("d.kari:")


def test_encrypt_to_one_certificate_named_twice_merges_it(env: Env) -> None:
    """`mail encrypt` to two addresses of one certificate (and one of them again in other
    case) finds that certificate for each, and encrypts to it once: one RecipientInfo."""
    root, root_key = root_ca("Partner Root CA", organisation="Partner Ltd")
    carol, carol_key = smime_leaf(
        root, root_key, mail="carol@partner.example", name="Carol Jones",
        also=("c.jones@partner.example",),
    )  # fmt: skip
    root_pem, cert_pem, key_pem = (env.work / f"partner-{n}.pem" for n in ("root", "carol", "key"))
    root_pem.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(carol.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        carol_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out = fresh(env, "named-twice")
    result = mailpki(
        "mail", "encrypt", "--trust", root_pem, "--cert", cert_pem, "--contacts",
        env.work / "no-contacts", "--to", "carol@partner.example", "--to",
        "c.jones@partner.example", "--to", "Carol@Partner.example", write(env, "plain", PLAIN), out,
    )  # fmt: skip
    assert result.code == 0, result.err
    # Both addresses were looked up and led to the same certificate ...
    serial = f"{carol.serial_number:032X}"
    for address in ("carol@partner.example", "c.jones@partner.example"):
        assert f"{address}: certificate {serial}" in result.err
    # ... which the message names once, and which opens it.
    assert recipient_count(out) == 1
    opened = env.work / "named-twice-opened"
    openssl("cms", "-decrypt", "-in", out, "-inkey", key_pem, "-recip", cert_pem, "-out", opened)
    assert b"the numbers are attached.\r\n" in opened.read_bytes()


def test_sign_encrypt_to_yourself_merges_your_copy(env: Env) -> None:
    """`--to` naming the sender (the sent copy is added anyway) or one address twice, in
    any case, is one recipient: the message is made, each person gets one copy."""
    out = fresh(env, "to-self")
    result = mailpki(
        "mail", "sign-encrypt", "--home", env.home, "--p12", env.bob.p12,
        "--password-file", env.password, "--to", env.bob.email, "--to", "BOB@example.com",
        "--to", env.alice.email, write(env, "plain", PLAIN), out,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert recipient_count(out) == 2
    for person in (env.alice, env.bob):
        assert b"multipart/signed" in openssl_decrypt(env, out, person)
