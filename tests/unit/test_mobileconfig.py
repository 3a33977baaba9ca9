"""Apple configuration profiles: valid plists with the payloads iOS expects, stable
identifiers, and never a password."""

from __future__ import annotations

import plistlib

from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    pkcs12,
)

from mailpki.base.mobileconfig import pkcs12_profile, profile_prefix, root_profile
from tests.fixtures.smime_pki import root_ca, smime_leaf


def test_prefix_is_reverse_dns() -> None:
    assert profile_prefix("example.com") == "com.example.mailpki"
    assert profile_prefix("Mail.Example.CO.UK") == "uk.co.example.mail.mailpki"
    assert profile_prefix("we!rd domain") == "we-rd-domain.mailpki"
    assert profile_prefix("") == "mailpki"


def test_root_profile() -> None:
    root, _ = root_ca("Example Root", organisation="Example Corp")
    data = root_profile(root, organisation="Example Corp", domain="example.com")
    document = plistlib.loads(data)
    assert document["PayloadType"] == "Configuration"
    (payload,) = document["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    assert payload["PayloadContent"] == root.public_bytes(Encoding.DER)
    assert payload["PayloadIdentifier"].startswith("com.example.mailpki.root.")
    assert root_profile(root, organisation="Example Corp", domain="example.com") == data
    other, _ = root_ca("Other Root")
    assert (
        plistlib.loads(root_profile(other, organisation="X", domain="example.com"))["PayloadUUID"]
        != document["PayloadUUID"]
    )


def test_pkcs12_profile_has_no_password() -> None:
    root, root_key = root_ca("Example Root", organisation="Example Corp")
    leaf, key = smime_leaf(root, root_key, mail="ann@example.com", name="Ann")
    password = b"Correct-Horse-Battery-9"
    p12 = pkcs12.serialize_key_and_certificates(
        b"ann", key, leaf, [root],
        BestAvailableEncryption(password),
    )  # fmt: skip
    data = pkcs12_profile(
        p12, file_name="ann.p12", certificate=leaf, root=root,
        organisation="Example Corp", domain="example.com",
    )  # fmt: skip
    document = plistlib.loads(data)
    identity, anchor = document["PayloadContent"]
    assert identity["PayloadType"] == "com.apple.security.pkcs12"
    assert identity["PayloadContent"] == p12
    assert "Password" not in identity and password not in data
    assert anchor["PayloadType"] == "com.apple.security.root"
    assert (
        len({p["PayloadUUID"] for p in document["PayloadContent"]} | {document["PayloadUUID"]}) == 3
    )
