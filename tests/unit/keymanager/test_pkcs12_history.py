"""A key history in one PKCS#12: every key readable, the newest the default."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from mailpki.errors import MailPKIError
from mailpki.keymanager.pkcs12 import load_pkcs12
from mailpki.keymanager.pkcs12_history import (
    MAX_HISTORY_KEYS,
    HistoryEntry,
    build_history_pkcs12,
    package_history,
)

PASSWORD = b"history-password-1"


def entry(n: int) -> HistoryEntry:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"key {n}")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return HistoryEntry(key, cert, f"history {n}")


@pytest.mark.parametrize("legacy", [False, True])
def test_every_key_is_in_the_file_and_the_first_is_the_default(legacy: bool) -> None:
    entries = [entry(n) for n in range(3)]
    data = build_history_pkcs12(entries, [], PASSWORD, legacy=legacy, generated_password=True)
    loaded = load_pkcs12(data, PASSWORD)  # checks the MAC, takes the first key
    assert loaded.certificate == entries[0].certificate
    assert loaded.friendly_name == "history 0"
    others = pkcs12.load_pkcs12(data, PASSWORD).additional_certs
    assert {c.certificate for c in others} == {e.certificate for e in entries[1:]}
    with pytest.raises(MailPKIError):
        load_pkcs12(data, b"wrong password")


def test_one_entry_is_an_ordinary_file_and_a_password_is_generated() -> None:
    data, generated = package_history([entry(0)], [], None)
    assert generated is not None
    assert load_pkcs12(data, generated.encode()).friendly_name == "history 0"


def test_bounds() -> None:
    with pytest.raises(MailPKIError, match="at least one key"):
        build_history_pkcs12([], [], PASSWORD)
    one = entry(0)
    with pytest.raises(MailPKIError, match=f"at most {MAX_HISTORY_KEYS}"):
        build_history_pkcs12([one] * (MAX_HISTORY_KEYS + 1), [], PASSWORD)
