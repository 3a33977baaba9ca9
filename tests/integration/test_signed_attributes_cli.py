"""Bad signed attributes through the command line: `mail verify` reports them and still
judges the signature; `contacts add-from-signed` refuses to guess which certificate to
keep and stores nothing; nothing is stored from a message that does not verify.

The messages are signed by mailpki.cms with the attributes given verbatim (what a
careless client could send); real clients' messages are in test_smime_nss.py.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailpki.cms.attributes import OID_ENCRYPTION_KEY_PREFERENCE, preference_values
from mailpki.cms.signed import sign
from tests.fixtures.smime_pki import root_ca, smime_leaf
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

INNER = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nhello\r\n"


@dataclass(frozen=True)
class World:
    folder: Path
    root: Path
    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    stranger: x509.Certificate  # same address, not carried in the messages


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    folder = tmp_path_factory.mktemp("attributes")
    root, root_key = root_ca("Attr Root", organisation="Attr Org")
    cert, key = smime_leaf(root, root_key, mail="eve@attr.test", name="Eve")
    stranger, _ = smime_leaf(root, root_key, mail="eve@attr.test", name="Eve 2", usage="encrypt")
    root_pem = folder / "root.pem"
    root_pem.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return World(folder, root_pem, cert, key, stranger)


def signed_mail(world: World, name: str, attributes: list[tuple[str, bytes]]) -> Path:
    der = sign(INNER, world.cert, world.key, detached=True, extra_attributes=attributes)
    encoded = base64.encodebytes(der).replace(b"\n", b"\r\n")
    boundary = "b-42"
    message = (
        b"From: eve@attr.test\r\nTo: someone@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        + f'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        f'micalg=sha-256; boundary="{boundary}"\r\n\r\n--{boundary}\r\n'.encode()
        + INNER
        + f"\r\n--{boundary}\r\nContent-Type: application/pkcs7-signature\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n".encode()
        + encoded
        + f"\r\n--{boundary}--\r\n".encode()
    )
    path = world.folder / f"{name}.eml"
    path.write_bytes(message)
    return path


def add(world: World, message: Path, contacts: Path) -> tuple[int, str]:
    result = mailpki(
        "contacts", "add-from-signed", message, "--trust", world.root, "--contacts", contacts
    )
    return result.code, result.err


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("dangling", "names a certificate that is not in the message"),
        ("garbage", "cannot be read"),
    ],
)
def test_unusable_preference_verifies_with_a_warning_but_is_not_stored(
    world: World, name: str, reason: str
) -> None:
    attributes = (
        preference_values(world.stranger)
        if name == "dangling"
        else [(OID_ENCRYPTION_KEY_PREFERENCE, b"\xa0\x03\x02\x01\x07")]
    )
    message = signed_mail(world, name, attributes)
    checked = mailpki("mail", "verify", message, "--trust", world.root)
    assert checked.code == 0, checked.out + checked.err
    assert "VALID" in checked.out.splitlines()
    assert any(line.startswith("warning:") and reason in line for line in checked.out.splitlines())
    report = json.loads(mailpki("mail", "verify", message, "--trust", world.root, "--json").out)
    assert report["valid"] is True and report["encryption_certificate"] is None
    contacts = world.folder / f"contacts-{name}"
    code, err = add(world, message, contacts)
    assert code == 2
    assert reason in err and "nothing stored" in err
    assert len(err.strip().splitlines()) == 1
    assert not contacts.exists() or not list(contacts.iterdir())


def test_unknown_attribute_is_listed_and_the_signer_kept(world: World) -> None:
    message = signed_mail(world, "unknown", [("1.3.6.1.4.1.99999.1", b"\x04\x02hi")])
    report = json.loads(mailpki("mail", "verify", message, "--trust", world.root, "--json").out)
    assert report["valid"] is True
    assert report["unknown_attributes"] == ["1.3.6.1.4.1.99999.1"]
    assert report["encryption_certificate"]["is_signer"] is True  # no preference stated
    contacts = world.folder / "contacts-unknown"
    assert add(world, message, contacts)[0] == 0
    stored = [x509.load_pem_x509_certificate(p.read_bytes()) for p in contacts.glob("*.pem")]
    assert stored == [world.cert]


def test_nothing_is_stored_from_a_message_that_does_not_verify(world: World) -> None:
    message = signed_mail(world, "tampered", preference_values(world.cert))
    message.write_bytes(message.read_bytes().replace(b"\r\nhello\r\n", b"\r\nHELLO\r\n", 1))
    checked = mailpki("mail", "verify", message, "--trust", world.root)
    assert checked.code == 1 and "VALID" not in checked.out.splitlines()
    contacts = world.folder / "contacts-tampered"
    code, err = add(world, message, contacts)
    assert code != 0 and "messageDigest" in err
    assert not contacts.exists() or not list(contacts.iterdir())
