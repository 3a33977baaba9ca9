"""PKCS#12 as other tools want it: legacy files root first (gpgsm), BER files (NSS)
read without a warning. The real gpgsm and pk12util are in tests/integration."""

from __future__ import annotations

import hmac
import warnings

import pytest
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from mailpki.errors import PKCS12Error
from mailpki.keymanager._pkcs12_order import _crypt, issuer_first, pkcs12_kdf_sha1
from mailpki.keymanager.pkcs12 import build_pkcs12, load_pkcs12
from tests.fixtures.smime_pki import root_ca, smime_leaf

PASSWORD = "pässword 42".encode()
Parts = tuple[x509.Certificate, x509.Certificate, rsa.RSAPrivateKey]


@pytest.fixture(scope="module")
def parts() -> Parts:
    root, root_key = root_ca("Order Root", organisation="Order Org")
    leaf, key = smime_leaf(root, root_key, mail="o@order.test", name="O")
    return root, leaf, key


def _cert_subjects_in_order(data: bytes, password: bytes) -> list[str]:
    pfx = asn1_pkcs12.Pfx.load(data)
    subjects = []
    for info in pfx.authenticated_safe:
        if info["content_type"].native != "encrypted_data":
            continue
        encrypted = info["content"]["encrypted_content_info"]
        params = encrypted["content_encryption_algorithm"]["parameters"]
        salt, rounds = bytes(params["salt"].native), int(params["iterations"].native)
        plain = _crypt(
            pkcs12_kdf_sha1(password, salt, 1, rounds, 24),
            pkcs12_kdf_sha1(password, salt, 2, rounds, 8),
            bytes(encrypted["encrypted_content"].native),
            encrypt=False,
        )
        for bag in asn1_pkcs12.SafeContents.load(plain):
            if bag["bag_id"].native == "cert_bag":
                cert = bag["bag_value"]["cert_value"].parsed
                subjects.append(cert.subject.native["common_name"])
    return subjects


def test_our_kdf_checks_the_mac_pyca_cryptography_wrote(parts: Parts) -> None:
    """A known answer from OpenSSL's PKCS#12 KDF: the MAC it wrote, recomputed here."""
    root, leaf, key = parts
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(PASSWORD)
    )
    data = pkcs12.serialize_key_and_certificates(b"o", key, leaf, [root], encryption)
    pfx = asn1_pkcs12.Pfx.load(data)
    mac = pfx["mac_data"]
    mac_key = pkcs12_kdf_sha1(
        PASSWORD, bytes(mac["mac_salt"].native), 3, int(mac["iterations"].native), 20
    )
    content = pfx["auth_safe"]["content"].native
    digest = hmac.new(mac_key, content, "sha1").digest()
    assert digest == bytes(mac["mac"]["digest"].native)
    assert _cert_subjects_in_order(data, PASSWORD) == ["O", "Order Root"]  # as written


def test_legacy_file_lists_the_root_first_and_still_opens(parts: Parts) -> None:
    root, leaf, key = parts
    data = build_pkcs12(key, leaf, [root], PASSWORD, friendly_name="O", legacy=True)
    assert _cert_subjects_in_order(data, PASSWORD) == ["Order Root", "O"]
    loaded = load_pkcs12(data, PASSWORD)  # pyca/cryptography checks the new MAC
    assert loaded.certificate == leaf
    assert loaded.chain == (root,)
    assert loaded.friendly_name == "O"
    with pytest.raises(ValueError):
        issuer_first(data, b"wrong password")


def _outer_as_ber(der: bytes) -> bytes:
    """The Pfx with an indefinite-length outer SEQUENCE, as NSS writes it."""
    assert der[0] == 0x30
    header = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    return b"\x30\x80" + der[header:] + b"\x00\x00"


def test_ber_file_loads_without_a_warning(parts: Parts) -> None:
    root, leaf, key = parts
    der = build_pkcs12(key, leaf, [root], PASSWORD, friendly_name="O")
    ber = _outer_as_ber(der)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_pkcs12(ber, PASSWORD)
    assert loaded.certificate == leaf


def test_truncated_ber_is_a_clear_error(parts: Parts) -> None:
    root, leaf, key = parts
    ber = _outer_as_ber(build_pkcs12(key, leaf, [root], PASSWORD, friendly_name="O"))
    with pytest.raises(PKCS12Error, match="not a PKCS#12 file"):
        load_pkcs12(ber[:-2], PASSWORD)
