"""`mailpki mail send` against a real SMTP server: compose, sign, encrypt, submit; the
delivered bytes decrypt and verify; errors send nothing."""

from __future__ import annotations

import email
import json
from dataclasses import dataclass
from email import policy
from pathlib import Path

import pytest

from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import Result, mailpki

pytestmark = pytest.mark.integration

PASSWORD = "send me 2026"
BODY = "Hello Alice and Carol,\nthe numbers are in.\n-- \nBob\n"
BODY_8BIT = "Hallo Alice und Carol,\nGrüße aus dem Büro.\n-- \nBob\n"


@dataclass(frozen=True)
class Env:
    home: Path
    work: Path
    password: Path
    bob: Path
    alice: Path
    carol: Path
    dave: Path
    body: Path
    body_8bit: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    work = tmp_path_factory.mktemp("mail-send")
    home = work / "corp"
    result = mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    )  # fmt: skip
    assert result.code == 0, result.err
    password = work / "pw"
    password.write_text(PASSWORD + "\n")
    p12s = []
    for address, name in [
        ("bob@example.com", "Bob Builder"),
        ("alice@example.com", "Alice Archer"),
        ("carol@example.com", "Carol Cook"),
        ("dave@example.com", "Dave Dyer"),
    ]:
        p12 = work / f"{address.split('@')[0]}.p12"
        result = mailpki(
            "enroll", "--home", home, "--email", address, "--name", name, "--out", p12,
            "--password-file", password,
        )  # fmt: skip
        assert result.code == 0, result.err
        p12s.append(p12)
    body = work / "body.txt"
    body.write_text(BODY, encoding="utf-8")
    body_8bit = work / "body-8bit.txt"
    body_8bit.write_text(BODY_8BIT, encoding="utf-8")
    return Env(home, work, password, *p12s, body, body_8bit)


def send(env: Env, smtp: SMTPServer | None, *args: str | Path) -> Result:
    server = ["--smtp-host", smtp.host, "--smtp-port", str(smtp.port)] if smtp else []
    return mailpki("mail", "send", "--home", env.home, *server, *args)


_counter = iter(range(1_000_000))


def save(env: Env, data: bytes) -> Path:
    path = env.work / f"received-{next(_counter)}.eml"
    path.write_bytes(data)
    return path


def decrypt(env: Env, path: Path, p12: Path) -> tuple[Result, Path]:
    out = env.work / f"opened-{next(_counter)}.eml"
    result = mailpki("mail", "decrypt", "--p12", p12, "--password-file", env.password, path, out)
    return result, out


def verify(env: Env, path: Path) -> Result:
    return mailpki("mail", "verify", path, "--home", env.home)


def is_valid(result: Result) -> bool:
    return result.code == 0 and "VALID" in result.out.splitlines()


def text_of(data: bytes) -> str:
    parsed = email.message_from_bytes(data, policy=policy.default)
    part = parsed.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


def test_compose_sign_encrypt_send(env: Env, smtp_server: SMTPServer) -> None:
    result = send(
        env, smtp_server,
        "--to", "alice@example.com", "--to", "carol@example.com",
        "--subject", "Quartalszahlen – Übersicht", "--body-file", env.body,
        "--sign", "--encrypt", "--p12", env.bob, "--password-file", env.password,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "sent to alice@example.com, carol@example.com" in result.out
    [received] = smtp_server.messages
    assert sorted(received.rcpt_tos) == ["alice@example.com", "carol@example.com"]
    assert received.mail_from == "bob@example.com"
    assert received.message.get_content_type() == "application/pkcs7-mime"
    assert received["From"] == "bob@example.com"
    assert received["Subject"] == "Quartalszahlen – Übersicht"
    assert b"numbers are in" not in received.raw
    path = save(env, received.raw)
    # Every recipient and the sender (sent copy) can open it; inside is Bob's signature.
    for p12 in (env.alice, env.carol, env.bob):
        opened_result, opened = decrypt(env, path, p12)
        assert opened_result.code == 0, opened_result.err
        verified = verify(env, opened)
        assert is_valid(verified), verified.out + verified.err
        out = env.work / f"verified-{next(_counter)}.eml"
        assert mailpki("mail", "verify", opened, "--home", env.home, "--out", out).code == 0
        assert text_of(out.read_bytes()) == BODY
    # Dave was not a recipient.
    opened_result, _ = decrypt(env, path, env.dave)
    assert opened_result.code != 0


def test_sign_only_send_verifies(env: Env, smtp_server: SMTPServer) -> None:
    result = send(
        env, smtp_server, "--to", "alice@example.com", "--subject", "signed",
        "--body-file", env.body, "--sign", "--p12", env.bob, "--password-file", env.password,
    )  # fmt: skip
    assert result.code == 0, result.err
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["alice@example.com"]
    assert received.message.get_content_type() == "multipart/signed"
    path = save(env, received.raw)
    assert is_valid(verify(env, path))
    out = env.work / f"verified-{next(_counter)}.eml"
    assert mailpki("mail", "verify", path, "--home", env.home, "--out", out).code == 0
    assert text_of(out.read_bytes()) == BODY
    # The signature tells Alice's client which certificate to encrypt a reply to.
    report = json.loads(mailpki("mail", "verify", path, "--home", env.home, "--json").out)
    assert {"encrypKeyPref", "msEncryptionKeyPreference"} <= set(report["signed_attributes"])
    assert report["encryption_certificate"]["is_signer"] is True  # single key


def test_sign_only_send_8bit_body_verifies(env: Env, smtp_server: SMTPServer) -> None:
    result = send(
        env, smtp_server, "--to", "alice@example.com", "--subject", "signed",
        "--body-file", env.body_8bit, "--sign", "--p12", env.bob, "--password-file", env.password,
    )  # fmt: skip
    assert result.code == 0, result.err
    [received] = smtp_server.messages
    path = save(env, received.raw)
    out = env.work / f"verified-{next(_counter)}.eml"
    result = mailpki("mail", "verify", path, "--home", env.home, "--out", out)
    assert is_valid(result), result.out + result.err
    assert text_of(out.read_bytes()) == BODY_8BIT


def test_compose_sign_encrypt_send_8bit_body(env: Env, smtp_server: SMTPServer) -> None:
    result = send(
        env, smtp_server, "--to", "alice@example.com", "--subject", "Grüße",
        "--body-file", env.body_8bit, "--sign", "--encrypt",
        "--p12", env.bob, "--password-file", env.password,
    )  # fmt: skip
    assert result.code == 0, result.err
    [received] = smtp_server.messages
    opened_result, opened = decrypt(env, save(env, received.raw), env.alice)
    assert opened_result.code == 0, opened_result.err
    out = env.work / f"verified-{next(_counter)}.eml"
    result = mailpki("mail", "verify", opened, "--home", env.home, "--out", out)
    assert is_valid(result), result.out + result.err
    assert text_of(out.read_bytes()) == BODY_8BIT


def test_encrypt_only_send(env: Env, smtp_server: SMTPServer) -> None:
    result = send(
        env, smtp_server, "--from", "bob@example.com", "--to", "alice@example.com",
        "--subject", "encrypted", "--body-file", env.body, "--encrypt",
        "--cipher", "aes256-gcm",
    )  # fmt: skip
    assert result.code == 0, result.err
    [received] = smtp_server.messages
    assert b"authEnveloped-data" in received.raw
    opened_result, opened = decrypt(env, save(env, received.raw), env.alice)
    assert opened_result.code == 0, opened_result.err
    assert "aes256-gcm" in opened_result.err
    assert text_of(opened.read_bytes()) == BODY


def test_whole_message_with_bcc(env: Env, smtp_server: SMTPServer) -> None:
    message = env.work / "with-bcc.eml"
    message.write_bytes(
        b"From: Bob Builder <bob@example.com>\n"
        b"To: Alice Archer <alice@example.com>\n"
        b"Cc: carol@example.com\n"
        b"Bcc: Dave Secret <dave@example.com>\n"
        b"Subject: with a blind copy\n"
        b"\n"
        b"Dave gets this too, but nobody may see it.\n"
    )
    # --to is required by the CLI; with --message the envelope comes from the headers.
    result = send(
        env, smtp_server, "--message", message, "--sign", "--to", "alice@example.com",
        "--p12", env.bob, "--password-file", env.password,
    )  # fmt: skip
    assert result.code == 0, result.err
    [received] = smtp_server.messages
    assert sorted(received.rcpt_tos) == [
        "alice@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    head = received.raw.split(b"\r\n\r\n", 1)[0].lower()
    assert b"dave" not in head and b"bcc" not in head
    assert b"dave@example.com" not in received.raw.lower()
    assert b"Dave Secret" not in received.raw
    assert received["Bcc"] is None
    assert is_valid(verify(env, save(env, received.raw)))


def test_whole_message_with_bcc_encrypted(env: Env, smtp_server: SMTPServer) -> None:
    message = env.work / "with-bcc-enc.eml"
    message.write_bytes(
        b"From: bob@example.com\nTo: alice@example.com\nBcc: dave@example.com\n"
        b"Subject: blind and sealed\n\nsecret\n"
    )
    result = send(
        env, smtp_server, "--message", message, "--encrypt",
        "--to", "alice@example.com", "--to", "dave@example.com",
        "--p12", env.bob, "--password-file", env.password,
    )  # fmt: skip
    assert result.code == 0, result.err
    [received] = smtp_server.messages
    assert sorted(received.rcpt_tos) == ["alice@example.com", "dave@example.com"]
    assert received["Bcc"] is None
    assert b"dave@example.com" not in received.raw.split(b"\r\n\r\n", 1)[0].lower()
    for p12 in (env.alice, env.dave):
        opened_result, opened = decrypt(env, save(env, received.raw), p12)
        assert opened_result.code == 0, opened_result.err
        assert opened.read_bytes().endswith(b"\r\n\r\nsecret\r\n")


def test_encrypt_covers_every_envelope_recipient(env: Env, smtp_server: SMTPServer) -> None:
    message = env.work / "cc-enc.eml"
    message.write_bytes(
        b"From: bob@example.com\nTo: alice@example.com\nCc: carol@example.com\n"
        b"Subject: for both\n\nfor both of you\n"
    )
    result = send(
        env, smtp_server, "--message", message, "--encrypt", "--to", "alice@example.com",
        "--p12", env.bob, "--password-file", env.password,
    )  # fmt: skip
    if result.code != 0:  # refusing is fine too, if nothing was sent
        assert smtp_server.messages == []
        return
    [received] = smtp_server.messages
    for address in received.rcpt_tos:
        p12 = {"alice@example.com": env.alice, "carol@example.com": env.carol}[address]
        opened_result, _ = decrypt(env, save(env, received.raw), p12)
        assert opened_result.code == 0, f"{address} cannot decrypt: {opened_result.err}"


def test_smtp_settings_from_the_instance(env: Env, smtp_server: SMTPServer, tmp_path: Path) -> None:
    home = tmp_path / "corp2"
    result = mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    )  # fmt: skip
    assert result.code == 0, result.err
    for key, value in [("smtp.host", smtp_server.host), ("smtp.port", str(smtp_server.port))]:
        result = mailpki("config", "set", "--home", home, key, value)
        assert result.code == 0, result.err
    result = mailpki(
        "mail", "send", "--home", home, "--from", "bob@example.com",
        "--to", "alice@example.com", "--subject", "via config", "--body-file", env.body,
    )  # fmt: skip
    assert result.code == 0, result.err
    [received] = smtp_server.messages
    assert received["Subject"] == "via config"
    assert received.text == BODY


def test_no_smtp_host(env: Env, smtp_server: SMTPServer, tmp_path: Path) -> None:
    # The instance has no smtp.host and none is given.
    result = send(
        env, None, "--from", "bob@example.com", "--to", "alice@example.com",
        "--body-file", env.body,
    )  # fmt: skip
    assert result.code != 0
    assert "SMTP" in result.err
    # Without an instance either.
    result = mailpki(
        "mail", "send", "--from", "bob@example.com", "--to", "alice@example.com",
        "--body-file", env.body, "--contacts", tmp_path / "contacts",
    )  # fmt: skip
    assert result.code != 0
    assert "SMTP" in result.err
    assert result.err.startswith("error:")
    assert smtp_server.messages == []


def test_server_down(env: Env, smtp_server: SMTPServer) -> None:
    smtp_server.stop()
    result = send(
        env, smtp_server, "--to", "alice@example.com", "--body-file", env.body,
        "--sign", "--encrypt", "--p12", env.bob, "--password-file", env.password,
    )  # fmt: skip
    assert result.code != 0
    assert f"{smtp_server.host}:{smtp_server.port}" in result.err
    smtp_server.start()
    assert smtp_server.messages == []
    # Up again: the same command goes through.
    result = send(
        env, smtp_server, "--to", "alice@example.com", "--body-file", env.body,
        "--sign", "--encrypt", "--p12", env.bob, "--password-file", env.password,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert len(smtp_server.messages) == 1


def test_recipient_without_certificate(env: Env, smtp_server: SMTPServer) -> None:
    result = send(
        env, smtp_server, "--to", "alice@example.com", "--to", "nobody@example.com",
        "--body-file", env.body, "--encrypt", "--p12", env.bob, "--password-file", env.password,
    )  # fmt: skip
    assert result.code != 0
    assert "nobody@example.com" in result.err
    assert smtp_server.messages == []


def test_refused_recipient(env: Env, smtp_server: SMTPServer) -> None:
    smtp_server.reject_recipients.add("carol@example.com")
    result = send(
        env, smtp_server, "--from", "bob@example.com", "--to", "carol@example.com",
        "--body-file", env.body,
    )  # fmt: skip
    assert result.code != 0
    assert "carol@example.com" in result.err
    assert smtp_server.messages == []


def test_usage_errors_send_nothing(env: Env, smtp_server: SMTPServer) -> None:
    cases = [
        # --sign without a key
        ("--to", "alice@example.com", "--body-file", env.body, "--sign"),
        # neither body nor message
        ("--from", "bob@example.com", "--to", "alice@example.com"),
        # both
        ("--from", "bob@example.com", "--to", "alice@example.com", "--body-file", env.body,
         "--message", env.body),
        # no From
        ("--to", "alice@example.com", "--body-file", env.body),
        # unknown cipher
        ("--from", "bob@example.com", "--to", "alice@example.com", "--body-file", env.body,
         "--encrypt", "--cipher", "rc2-40"),
    ]  # fmt: skip
    for args in cases:
        result = send(env, smtp_server, *args)
        assert result.code != 0, args
        assert "error:" in result.err, (args, result.err)
    # No --to at all: the CLI's own usage error.
    result = send(env, smtp_server, "--from", "bob@example.com", "--body-file", env.body)
    assert result.code == 2 and "--to" in result.err
    assert smtp_server.messages == []


def test_whole_message_without_from_option(env: Env, smtp_server: SMTPServer) -> None:
    """--message carries its own From: neither --from nor --p12 is needed (the CLI
    insists on one --to even so)."""
    message = env.work / "plain.eml"
    message.write_bytes(
        b"From: bob@example.com\nTo: alice@example.com\nSubject: plain\n\nplain text\n"
    )
    result = mailpki(
        "mail", "send", "--message", message, "--to", "alice@example.com",
        "--smtp-host", smtp_server.host,
        "--smtp-port", str(smtp_server.port), "--contacts", env.work / "no-contacts",
    )  # fmt: skip
    assert result.code == 0, result.err
    [received] = smtp_server.messages
    assert received.mail_from == "bob@example.com"


def test_send_encrypted_to_yourself_and_a_colleague(env: Env, smtp_server: SMTPServer) -> None:
    """The sender among the --to addresses (their copy is added anyway) is one recipient."""
    result = send(
        env, smtp_server, "--to", "bob@example.com", "--to", "alice@example.com",
        "--to", "Alice@Example.com", "--subject", "note to self", "--body-file", env.body,
        "--sign", "--encrypt", "--p12", env.bob, "--password-file", env.password,
    )  # fmt: skip
    assert result.code == 0, result.err
    [received] = smtp_server.messages
    path = save(env, received.raw)
    for p12 in (env.bob, env.alice):
        opened_result, opened = decrypt(env, path, p12)
        assert opened_result.code == 0, opened_result.err
        assert is_valid(verify(env, opened))
