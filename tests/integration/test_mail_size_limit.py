"""One message-size limit for every `mailpki mail` command, at its real value (64 MiB).

A 50 MB message used to sign and encrypt fine, and then `mail verify` (16 MiB) and
`mail decrypt` (64 MiB, but the base64 of the encrypted 50 MB is ~68 MB) refused
mailpki's own output. Now what sign and encrypt write, verify and decrypt read, and
what would not fit is refused before any work, with one line saying why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailpki.smime.message import MAX_MESSAGE_BYTES
from tests.integration.cli_helpers import Result, mailpki

pytestmark = pytest.mark.integration

HEAD = (
    b"From: Bob Builder <bob@example.com>\r\nTo: bob@example.com\r\nSubject: big\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
)
LINE = b"the quick brown fox jumps over the lazy dog; 0123456789 0123456789\r\n"


@pytest.fixture(scope="module")
def bob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(home, bob's PKCS#12, its password file)."""
    work = tmp_path_factory.mktemp("size")
    home = work / "corp"
    result = mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    )  # fmt: skip
    assert result.code == 0, result.err
    password = work / "pw"
    password.write_text("a-password-for-bob\n")
    p12 = work / "bob.p12"
    result = mailpki(
        "enroll", "--home", home, "--email", "bob@example.com", "--name", "Bob Builder",
        "--out", p12, "--password-file", password,
    )  # fmt: skip
    assert result.code == 0, result.err
    return home, p12, password


def big_message(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.write(HEAD)
        whole, rest = divmod(size, len(LINE))
        chunk = LINE * 10_000
        for _ in range(whole // 10_000):
            f.write(chunk)
        f.write(LINE * (whole % 10_000) + LINE[:rest])
    return path


def one_line_refusal(result: Result, out: Path) -> str:
    assert result.code == 2, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "over the limit of 67,108,864 bytes (64 MiB)" in lines[0], lines[0]
    assert not out.exists()
    return lines[0]


def test_fifty_megabytes_sign_and_verify_but_do_not_encrypt(
    bob: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    home, p12, password = bob
    message = big_message(tmp_path / "big.eml", 50_000_000)

    signed = tmp_path / "signed.eml"
    result = mailpki("mail", "sign", "--p12", p12, "--password-file", password, message, signed)
    assert result.code == 0, result.err
    assert signed.stat().st_size <= MAX_MESSAGE_BYTES
    result = mailpki("mail", "verify", signed, "--home", home)
    assert result.code == 0, result.out + result.err  # was: over the limit of 16 MiB
    assert "VALID" in result.out.splitlines()

    # Its base64 would be ~68 MB: refused before anything is encrypted or signed.
    for args, out in (
        (("mail", "encrypt", "--home", home, "--to", "bob@example.com"), tmp_path / "enc.eml"),
        (("mail", "sign", "--opaque", "--p12", p12, "--password-file", password), tmp_path / "o"),
        (
            ("mail", "sign-encrypt", "--home", home, "--to", "bob@example.com",
             "--p12", p12, "--password-file", password),
            tmp_path / "se.eml",
        ),
    ):  # fmt: skip
        line = one_line_refusal(mailpki(*args, message, out), out)
        assert "could be" in line


def test_the_largest_message_that_encrypts_decrypts(
    bob: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    home, p12, password = bob
    message = big_message(tmp_path / "big.eml", 48_000_000)
    encrypted = tmp_path / "enc.eml"
    result = mailpki(
        "mail", "encrypt", "--home", home, "--to", "bob@example.com", message, encrypted
    )
    assert result.code == 0, result.err
    assert 60_000_000 < encrypted.stat().st_size <= MAX_MESSAGE_BYTES
    opened = tmp_path / "opened.eml"
    result = mailpki(
        "mail", "decrypt", "--p12", p12, "--password-file", password, encrypted, opened
    )
    assert result.code == 0, result.err
    assert opened.read_bytes().endswith(message.read_bytes()[-len(LINE) :])


def test_a_message_over_the_limit_is_refused_by_every_command(
    bob: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    home, p12, password = bob
    message = big_message(tmp_path / "huge.eml", MAX_MESSAGE_BYTES + 1)
    for args in (
        ("mail", "verify", "--home", home, message),
        ("mail", "decrypt", "--p12", p12, "--password-file", password, message, tmp_path / "d"),
        ("mail", "sign", "--p12", p12, "--password-file", password, message, tmp_path / "s"),
    ):
        result = mailpki(*args)
        assert result.code == 2, (args, result.err)
        assert "limit" in result.err and len(result.err.strip().splitlines()) == 1, result.err
