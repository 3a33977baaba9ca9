"""Serial numbers: ≥ 64 bits from a CSPRNG, shown and accepted as hex."""

from __future__ import annotations

import re
import secrets

from mailpki.errors import InputError

_HEX = re.compile(r"^(0x)?[0-9a-f]+$")


def new_serial() -> int:
    """A positive serial of exactly 127 bits, 126 of them random (the BRs ask for at least
    64; 20 octets is the RFC 5280 limit). The top bit is always set, so every new serial
    is 32 hex digits without a leading zero: printed padded or not, it reads the same."""
    return secrets.randbits(126) | (1 << 126)


def to_hex(serial: int) -> str:
    """Storage and display form: uppercase hex, no leading zeros (as 'certs list' prints)."""
    return format(serial, "X")


SERIAL_DIGITS = 32  # 127-bit serials: at most 32 hex digits


def show_serial(serial: int | str) -> str:
    """How a serial is printed, in the CLI and on pages: upper-case hex zero-padded to
    32 digits, so every serial has the same width (a random serial can have leading zero
    digits). `parse_serial` reads it back; storage keeps `to_hex`."""
    value = int(serial, 16) if isinstance(serial, str) else serial
    return format(value, f"0{SERIAL_DIGITS}X")


def parse_serial(text: str) -> int:
    """Accept hex as printed by 'certs list', with optional 0x, colons or spaces."""
    cleaned = text.strip().lower().replace(":", "").replace(" ", "")
    if not cleaned or not _HEX.match(cleaned) or len(cleaned) > 42:
        raise InputError(f"'{text}' is not a serial number (expected hex, e.g. 3A9F01...)")
    value = int(cleaned.removeprefix("0x"), 16)
    if value <= 0:
        raise InputError(f"'{text}' is not a valid serial number (must be positive)")
    return value
