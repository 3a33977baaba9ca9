"""One PKCS#12 file with several keys: a person's whole key history.

After years of renewals a person has one encryption key per certificate; a new laptop
needs all of them to read old mail. Mail clients import every key and certificate of a
PKCS#12 file (NSS's pk12util for Thunderbird, `openssl pkcs12`, Windows), and where one
key is taken as "the" key (OpenSSL's and pyca/cryptography's parsers) it is the first
key bag. So the newest key comes first, with its certificate first and the CA chain;
older keys follow, newest to oldest. Each key and its certificate share a localKeyId
(the certificate's SHA-1, as OpenSSL writes it), and the friendly names say which one
is current.

pyca/cryptography writes one key per file: each key is written as its own file with
the same password, their (self-contained, separately encrypted) safes are put into one
authenticated safe, and the MAC is computed again over it with the first file's salt
and rounds (RFC 7292 appendix B.2 KDF).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import core
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509

from mailpki.errors import MailPKIError
from mailpki.keymanager._pkcs12_order import pkcs12_kdf
from mailpki.keymanager.pkcs12 import PKCS12Key, build_pkcs12, generate_password

_MAC_ID = 3
_MAC_SIZES = {"sha1": 20, "sha256": 32}
MAX_HISTORY_KEYS = 64


@dataclass(frozen=True)
class HistoryEntry:
    """One key of the history, its certificate and the name clients show for it."""

    key: PKCS12Key
    certificate: x509.Certificate
    friendly_name: str


def build_history_pkcs12(
    entries: Sequence[HistoryEntry],
    chain: Sequence[x509.Certificate],
    password: bytes,
    *,
    legacy: bool = False,
    generated_password: bool = False,
) -> bytes:
    """DER PKCS#12 holding every entry's key and certificate, `entries[0]` (the newest,
    the default) first and with `chain` (issuing CA first, root last)."""
    if not entries:
        raise MailPKIError("a key history needs at least one key")
    if len(entries) > MAX_HISTORY_KEYS:
        raise MailPKIError(f"a key history holds at most {MAX_HISTORY_KEYS} keys")
    files = [
        build_pkcs12(
            entry.key,
            entry.certificate,
            chain if position == 0 else [],
            password,
            friendly_name=entry.friendly_name,
            legacy=legacy,
            generated_password=generated_password,
        )
        for position, entry in enumerate(entries)
    ]
    if len(files) == 1:
        return files[0]
    return _merged(files, password)


def package_history(
    entries: Sequence[HistoryEntry],
    chain: Sequence[x509.Certificate],
    password: bytes | None,
    *,
    legacy: bool = False,
) -> tuple[bytes, str | None]:
    """(PKCS#12, the generated password or None), as `pkcs12.package` for one key."""
    generated = generate_password() if password is None else None
    data = build_history_pkcs12(
        entries,
        chain,
        generated.encode() if generated is not None else password or b"",
        legacy=legacy,
        generated_password=generated is not None,
    )
    return data, generated


def _merged(files: Sequence[bytes], password: bytes) -> bytes:
    """The safes of `files` (all built here with `password`) in one file, in order."""
    first = asn1_pkcs12.Pfx.load(files[0])
    safes = [info for data in files for info in asn1_pkcs12.Pfx.load(data).authenticated_safe]
    auth_safe = asn1_pkcs12.AuthenticatedSafe(safes).dump(force=True)
    mac_data = first["mac_data"]
    hash_name = str(mac_data["mac"]["digest_algorithm"]["algorithm"].native)
    if hash_name not in _MAC_SIZES:
        raise MailPKIError(f"unexpected PKCS#12 MAC hash {hash_name}")
    salt = bytes(mac_data["mac_salt"].native)
    rounds = int(mac_data["iterations"].native)
    mac_key = pkcs12_kdf(
        password, salt, _MAC_ID, rounds, _MAC_SIZES[hash_name], hash_name=hash_name
    )
    digest = hmac.new(mac_key, auth_safe, hash_name).digest()
    pfx = asn1_pkcs12.Pfx(
        {
            "version": "v3",
            "auth_safe": {"content_type": "data", "content": core.OctetString(auth_safe)},
            "mac_data": {
                "mac": {"digest_algorithm": {"algorithm": hash_name}, "digest": digest},
                "mac_salt": salt,
                "iterations": rounds,
            },
        }
    )
    result: bytes = pfx.dump(force=True)
    return result
