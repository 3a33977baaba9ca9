"""`mailpki contacts ...` and where `mailpki mail encrypt` finds recipients: the
instance, the contacts folder (certificates kept from verified signed mails, pinned even
from a foreign CA), and a running `mailpki serve` certificate directory (--certdir)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.cli_helpers import Result, mailpki, openssl

pytestmark = pytest.mark.integration

PASSWORD = "contacts 2026 pw"


@dataclass(frozen=True)
class Person:
    email: str
    p12: Path
    serial: str
    cert: x509.Certificate

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class Env:
    home: Path  # Example Corp
    other: Path  # Other Corp, a foreign CA
    work: Path
    password: Path
    bob: Person
    alice: Person
    zoe: Person  # from Other Corp


def init(home: Path, org: str, domain: str) -> None:
    result = mailpki(
        "init", "--home", home, "--org", org, "--domain", domain,
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    )  # fmt: skip
    assert result.code == 0, result.err


def enroll(home: Path, work: Path, password: Path, address: str, name: str) -> Person:
    p12 = work / f"{address.replace('@', '_at_')}.p12"
    result = mailpki(
        "enroll", "--home", home, "--email", address, "--name", name, "--out", p12,
        "--password-file", password,
    )  # fmt: skip
    assert result.code == 0, result.err
    match = re.search(r"certificate ([0-9A-F]+)", result.out + result.err)
    assert match
    pem = openssl(
        "pkcs12", "-in", p12, "-passin", f"file:{password}", "-clcerts", "-nokeys"
    ).stdout  # fmt: skip
    return Person(address, p12, match.group(1), x509.load_pem_x509_certificate(pem.encode()))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    work = tmp_path_factory.mktemp("contacts")
    home, other = work / "corp", work / "other"
    init(home, "Example Corp", "example.com")
    init(other, "Other Corp", "example.org")
    password = work / "pw"
    password.write_text(PASSWORD + "\n")
    bob = enroll(home, work, password, "bob@example.com", "Bob Builder")
    alice = enroll(home, work, password, "alice@example.com", "Alice Archer")
    zoe = enroll(other, work, password, "zoe@example.org", "Zoe Zimmer")
    return Env(home, other, work, password, bob, alice, zoe)


_counter = iter(range(1_000_000))


def fresh(env: Env, stem: str) -> Path:
    return env.work / f"{stem}-{next(_counter)}.eml"


def signed_by(env: Env, person: Person, sender: str | None = None) -> Path:
    source = fresh(env, "plain")
    source.write_bytes(
        f"From: {sender or person.email}\nTo: alice@example.com\nSubject: hello\n\n"
        "Keep my certificate.\n".encode()
    )
    out = fresh(env, "signed")
    result = mailpki(
        "mail", "sign", "--p12", person.p12, "--password-file", env.password, source, out
    )
    assert result.code == 0, result.err
    return out


def contacts(*args: str | Path) -> Result:
    return mailpki("contacts", *args)


def listed(folder: Path) -> list[dict[str, object]]:
    result = contacts("list", "--json", "--contacts", folder)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert isinstance(data, list)
    return data


def encrypt(env: Env, to: str, *args: str | Path) -> tuple[Result, Path]:
    source = fresh(env, "plain")
    source.write_bytes(b"From: alice@example.com\nTo: " + to.encode() + b"\nSubject: s\n\nsecret\n")
    out = fresh(env, "enc")
    return mailpki("mail", "encrypt", "--to", to, *args, source, out), out


def decrypts_for(env: Env, path: Path, person: Person) -> bool:
    out = fresh(env, "dec")
    result = mailpki(
        "mail", "decrypt", "--p12", person.p12, "--password-file", env.password, path, out
    )
    return result.code == 0 and out.read_bytes().endswith(b"\r\n\r\nsecret\r\n")


# -- add-from-signed -------------------------------------------------------------------------


def test_add_list_remove(env: Env, tmp_path: Path) -> None:
    folder = tmp_path / "contacts"
    result = contacts("list", "--contacts", folder)
    assert result.code == 0 and "no contacts" in result.out
    assert listed(folder) == []

    result = contacts("add-from-signed", signed_by(env, env.bob), "--home", env.home,
                      "--contacts", folder)  # fmt: skip
    assert result.code == 0, result.err
    assert "added bob@example.com" in result.out
    assert "chains to a trusted root" in result.out
    # Opaque signatures do as well; adding the same certificate twice keeps one copy.
    opaque_source = fresh(env, "plain")
    opaque_source.write_bytes(b"From: alice@example.com\nTo: bob@example.com\n\nhi\n")
    opaque = fresh(env, "opaque")
    result = mailpki(
        "mail", "sign", "--p12", env.alice.p12, "--password-file", env.password, "--opaque",
        opaque_source, opaque,
    )  # fmt: skip
    assert result.code == 0, result.err
    for _ in range(2):
        result = contacts("add-from-signed", opaque, "--home", env.home, "--contacts", folder)
        assert result.code == 0, result.err

    entries = listed(folder)
    assert [e["addresses"] for e in entries] == [["alice@example.com"], ["bob@example.com"]]
    assert {e["fingerprint"] for e in entries} == {env.alice.fingerprint, env.bob.fingerprint}
    assert all(e["expired"] is False for e in entries)
    assert sorted(p.name for p in folder.glob("*.pem")) == sorted(
        f"{p.fingerprint}.pem" for p in (env.alice, env.bob)
    )
    text = contacts("list", "--contacts", folder)
    assert "bob@example.com" in text.out and env.bob.fingerprint[:16] in text.out

    # remove by address (case does not matter) ...
    result = contacts("remove", "BOB@example.com", "--contacts", folder)
    assert result.code == 0, result.err
    assert "removed 1" in result.out
    assert [e["addresses"] for e in listed(folder)] == [["alice@example.com"]]
    # ... and by a fingerprint prefix (8 hex digits at least).
    result = contacts("remove", env.alice.fingerprint[:7], "--contacts", folder)
    assert result.code != 0 and "8 hex" in result.err
    result = contacts("remove", env.alice.fingerprint[:10].upper(), "--contacts", folder)
    assert result.code == 0, result.err
    assert listed(folder) == []
    # Nothing left to remove.
    result = contacts("remove", "bob@example.com", "--contacts", folder)
    assert result.code == 3
    assert "no contact" in result.err


def test_add_refuses_bad_input(env: Env, tmp_path: Path) -> None:
    folder = tmp_path / "contacts"
    # From is someone else than the signer.
    result = contacts(
        "add-from-signed", signed_by(env, env.bob, sender="carol@example.com"),
        "--home", env.home, "--contacts", folder,
    )  # fmt: skip
    assert result.code != 0
    assert "not the From address" in result.err
    # The signature does not verify.
    tampered = fresh(env, "tampered")
    tampered.write_bytes(signed_by(env, env.bob).read_bytes().replace(b"Keep my", b"Take my"))
    result = contacts("add-from-signed", tampered, "--home", env.home, "--contacts", folder)
    assert result.code != 0
    assert result.err.startswith("error:")
    # Not signed at all.
    plain = fresh(env, "plain")
    plain.write_bytes(b"From: bob@example.com\n\nnot signed\n")
    result = contacts("add-from-signed", plain, "--home", env.home, "--contacts", folder)
    assert result.code != 0
    assert "not signed" in result.err
    # Not a message.
    garbage = fresh(env, "garbage")
    garbage.write_bytes(b"\x00\x01garbage without headers")
    result = contacts("add-from-signed", garbage, "--contacts", folder)
    assert result.code != 0 and result.err.startswith("error:")
    assert listed(folder) == []


def test_foreign_signer_is_pinned(env: Env, tmp_path: Path) -> None:
    folder = tmp_path / "contacts"
    # No instance, no --trust: the signer's certificate stands in for the anchor.
    result = contacts("add-from-signed", signed_by(env, env.zoe), "--contacts", folder)
    assert result.code == 0, result.err
    assert "added zoe@example.org" in result.out
    assert "pinned" in result.out
    # With our instance (whose CA is not Zoe's) it is pinned as well.
    folder2 = tmp_path / "contacts2"
    result = contacts(
        "add-from-signed", signed_by(env, env.zoe), "--home", env.home, "--contacts", folder2
    )
    assert result.code == 0, result.err
    assert "pinned" in result.out
    # With Other Corp's root given as --trust it chains.
    folder3 = tmp_path / "contacts3"
    result = contacts(
        "add-from-signed", signed_by(env, env.zoe), "--trust", env.other / "ca" / "root.pem",
        "--contacts", folder3,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "chains to a trusted root" in result.out
    # A pinned signer with the wrong From is still refused.
    result = contacts(
        "add-from-signed", signed_by(env, env.zoe, sender="bob@example.com"), "--contacts",
        tmp_path / "contacts4",
    )  # fmt: skip
    assert result.code != 0
    assert listed(tmp_path / "contacts4") == []

    # mail encrypt uses the contact when no instance knows the address ...
    result, out = encrypt(env, "zoe@example.org", "--contacts", folder)
    assert result.code == 0, result.err
    assert "from contacts" in result.err
    assert decrypts_for(env, out, env.zoe)
    # ... also next to an instance (which does not know Zoe) ...
    result, out = encrypt(env, "zoe@example.org", "--home", env.home, "--contacts", folder)
    assert result.code == 0, result.err
    assert "from contacts" in result.err
    assert decrypts_for(env, out, env.zoe)
    # ... and without the contact nobody has a certificate for her.
    result = contacts("remove", "zoe@example.org", "--contacts", folder)
    assert result.code == 0, result.err
    result, out = encrypt(env, "zoe@example.org", "--home", env.home, "--contacts", folder)
    assert result.code != 0
    assert "no usable certificate for zoe@example.org" in result.err
    assert not out.exists()


def test_instance_is_asked_before_contacts(env: Env, tmp_path: Path) -> None:
    folder = tmp_path / "contacts"
    result = contacts("add-from-signed", signed_by(env, env.bob), "--home", env.home,
                      "--contacts", folder)  # fmt: skip
    assert result.code == 0, result.err
    result, out = encrypt(env, "bob@example.com", "--home", env.home, "--contacts", folder)
    assert result.code == 0, result.err
    assert "from this instance" in result.err
    assert decrypts_for(env, out, env.bob)
    # Without the instance the contact (pinned; issuer unknown) is used.
    result, out = encrypt(env, "bob@example.com", "--contacts", folder)
    assert result.code == 0, result.err
    assert "from contacts" in result.err
    assert decrypts_for(env, out, env.bob)


def _expired_certificate(address: str) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old CA")])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old Timer")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=800))
        .not_valid_after(now - dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def test_expired_contact_is_refused(env: Env, tmp_path: Path) -> None:
    folder = tmp_path / "contacts"
    folder.mkdir()
    cert = _expired_certificate("old@example.org")
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    (folder / f"{fingerprint}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    [entry] = listed(folder)
    assert entry["expired"] is True and entry["addresses"] == ["old@example.org"]
    assert "(expired)" in contacts("list", "--contacts", folder).out
    result, out = encrypt(env, "old@example.org", "--contacts", folder)
    assert result.code != 0
    assert "old@example.org" in result.err
    assert re.search(r"expired|not valid after|valid until", result.err, re.IGNORECASE)
    assert not out.exists()


@pytest.fixture(scope="module")
def revoked_contact(env: Env, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A contacts folder holding Rita's certificate, which the instance then revoked,
    and a mail Rita signed."""
    work = tmp_path_factory.mktemp("revoked-contact")
    rita = enroll(env.home, work, env.password, "rita@example.com", "Rita Rowe")
    folder = work / "contacts"
    signed = signed_by(env, rita)
    result = contacts("add-from-signed", signed, "--home", env.home, "--contacts", folder)
    assert result.code == 0, result.err
    result = mailpki("ca", "revoke", "--home", env.home, rita.serial, "--reason", "keyCompromise")
    assert result.code == 0, result.err
    return folder, signed


def test_revoked_certificate_not_used_from_the_instance(env: Env, tmp_path: Path) -> None:
    rosa = enroll(env.home, tmp_path, env.password, "rosa@example.com", "Rosa Rand")
    result, out = encrypt(env, "rosa@example.com", "--home", env.home,
                          "--contacts", tmp_path / "none")  # fmt: skip
    assert result.code == 0, result.err
    result = mailpki("ca", "revoke", "--home", env.home, rosa.serial)
    assert result.code == 0, result.err
    result, out = encrypt(env, "rosa@example.com", "--home", env.home,
                          "--contacts", tmp_path / "none")  # fmt: skip
    assert result.code != 0
    assert "no usable certificate for rosa@example.com" in result.err
    assert not out.exists()


def test_revoked_contact_is_refused(env: Env, revoked_contact: tuple[Path, Path]) -> None:
    folder, _ = revoked_contact
    result, out = encrypt(env, "rita@example.com", "--home", env.home, "--contacts", folder)
    assert result.code != 0, result.err
    assert "revoked" in result.err
    assert not out.exists()


def test_revoked_signer_verify_says_revoked(env: Env, revoked_contact: tuple[Path, Path]) -> None:
    _, signed = revoked_contact
    result = mailpki("mail", "verify", signed, "--home", env.home)
    assert result.code == 1 and "revocation: revoked" in result.out


def test_add_from_signed_refuses_revoked_signer(
    env: Env, revoked_contact: tuple[Path, Path], tmp_path: Path
) -> None:
    _, signed = revoked_contact
    folder = tmp_path / "contacts"
    result = contacts("add-from-signed", signed, "--home", env.home, "--contacts", folder)
    assert result.code != 0, result.out
    assert listed(folder) == []


# -- the certificate directory of a running `mailpki serve` ---------------------------------


def test_certdir_of_a_running_serve(
    serve: Callable[[], str], sqlite_home: Path, tmp_path: Path
) -> None:
    url = serve()
    password = tmp_path / "pw"
    password.write_text(PASSWORD + "\n")
    carl = enroll(sqlite_home, tmp_path, password, "carl@example.com", "Carl Cramer")
    source = tmp_path / "plain.eml"
    source.write_bytes(b"From: x@example.com\nTo: carl@example.com\nSubject: s\n\nsecret\n")
    empty = tmp_path / "no-contacts"
    root = sqlite_home / "ca" / "root.pem"
    issuing = sqlite_home / "ca" / "issuing.pem"

    out = tmp_path / "enc.eml"
    result = mailpki(
        "mail", "encrypt", "--to", "carl@example.com", "--certdir", url, "--trust", root,
        "--trust", issuing, "--contacts", empty, source, out,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert f"from certificate directory {url}" in result.err
    decrypted = tmp_path / "dec.eml"
    result = mailpki(
        "mail", "decrypt", "--p12", carl.p12, "--password-file", password, out, decrypted
    )
    assert result.code == 0, result.err
    assert decrypted.read_bytes().endswith(b"\r\n\r\nsecret\r\n")

    # A certificate from the directory must chain: without --trust it is refused.
    result = mailpki(
        "mail", "encrypt", "--to", "carl@example.com", "--certdir", url,
        "--contacts", empty, source, tmp_path / "enc2.eml",
    )  # fmt: skip
    assert result.code != 0
    assert "trust" in result.err
    # Unknown address: 404, nothing found.
    result = mailpki(
        "mail", "encrypt", "--to", "nobody@example.com", "--certdir", url, "--trust", root,
        "--trust", issuing, "--contacts", empty, source, tmp_path / "enc3.eml",
    )  # fmt: skip
    assert result.code != 0
    assert "no usable certificate for nobody@example.com" in result.err
    # Revoked in the instance: the directory no longer offers it (its AIA names
    # pki.example.com, which is not reachable here, so OCSP cannot tell).
    result = mailpki("ca", "revoke", "--home", sqlite_home, carl.serial)
    assert result.code == 0, result.err
    result = mailpki(
        "mail", "encrypt", "--to", "carl@example.com", "--certdir", url, "--trust", root,
        "--trust", issuing, "--contacts", empty, source, tmp_path / "enc4.eml",
    )  # fmt: skip
    assert result.code != 0
    assert not (tmp_path / "enc4.eml").exists()


def test_certdir_not_reachable(env: Env, tmp_path: Path) -> None:
    result, out = encrypt(
        env, "carl@example.com", "--certdir", "http://127.0.0.1:9", "--trust",
        env.home / "ca" / "root.pem", "--contacts", tmp_path / "none",
    )  # fmt: skip
    assert result.code != 0
    assert "not reachable" in result.err
    assert not out.exists()
    result, out = encrypt(env, "carl@example.com", "--certdir", "ftp://example.com/x")
    assert result.code != 0
    assert "http" in result.err
