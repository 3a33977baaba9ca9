"""Serial numbers: ≥ 64 bits from a CSPRNG, shown and accepted as hex."""

from __future__ import annotations

import re
import secrets

from mailpki.errors import InputError

_HEX = re.compile(r"^(0x)?[0-9a-f]+$")


def new_serial() -> int:
    """A positive 127-bit random serial (20 octets is the RFC 5280 limit)."""
    while True:
        serial = secrets.randbits(127)
        if serial >= 1 << 64:  # keep at least 64 significant bits, as the BRs ask
            return serial


def to_hex(serial: int) -> str:
    """Storage and display form: uppercase hex, no leading zeros (as 'certs list' prints)."""
    return format(serial, "X")


def parse_serial(text: str) -> int:
    """Accept hex as printed by 'certs list', with optional 0x, colons or spaces."""
    cleaned = text.strip().lower().replace(":", "").replace(" ", "")
    if not cleaned or not _HEX.match(cleaned) or len(cleaned) > 42:
        raise InputError(f"'{text}' is not a serial number (expected hex, e.g. 3A9F01...)")
    value = int(cleaned.removeprefix("0x"), 16)
    if value <= 0:
        raise InputError(f"'{text}' is not a valid serial number (must be positive)")
    return value
