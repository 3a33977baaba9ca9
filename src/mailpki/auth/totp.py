"""Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA-1, 6 digits, 30 s.

What authenticator apps (FreeOTP, Aegis, Google Authenticator, 1Password ...) show. Pure
functions, no I/O: the caller keeps the secret (encrypted) and the last step used, so a
code is accepted once (`verify` returns its step; the caller refuses any step not newer
than the last one it accepted). Codes are compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

__all__ = [
    "DIGITS",
    "DRIFT_STEPS",
    "SECRET_BYTES",
    "STEP_SECONDS",
    "matching_step",
    "new_secret",
    "provisioning_uri",
    "secret_base32",
    "step_at",
    "totp_code",
]

DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1  # a code of the step before or after is accepted too (clock drift)
SECRET_BYTES = 20  # 160 bits, as RFC 4226 recommends for HMAC-SHA-1


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def secret_base32(secret: bytes) -> str:
    """The secret as authenticator apps take it: base32, upper case, without padding."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def step_at(unix_time: float) -> int:
    """The time step (T in RFC 6238) of a moment: whole 30 s periods since 1970."""
    return int(unix_time) // STEP_SECONDS


def hotp(secret: bytes, counter: int, digits: int = DIGITS) -> str:
    """RFC 4226 HOTP: HMAC-SHA-1 of the 8-byte counter, dynamically truncated."""
    mac = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def totp_code(secret: bytes, unix_time: float, digits: int = DIGITS) -> str:
    """The code an authenticator shows at `unix_time`."""
    return hotp(secret, step_at(unix_time), digits)


def _well_formed(code: str) -> bool:
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def matching_step(secret: bytes, code: str, unix_time: float) -> int | None:
    """The step whose code `code` is, within ±DRIFT_STEPS of `unix_time`; None if none is.

    Spaces (people type "123 456") are dropped; anything but 6 ASCII digits is refused
    before any HMAC. Every candidate is computed and compared in constant time, so the
    answer's timing does not tell which step matched."""
    code = code.replace(" ", "")
    if not _well_formed(code):
        return None
    now = step_at(unix_time)
    found: int | None = None
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        if hmac.compare_digest(hotp(secret, step).encode(), code.encode()) and found is None:
            found = step
    return found


def provisioning_uri(secret: bytes, login: str, issuer: str) -> str:
    """The `otpauth://totp/ISSUER:LOGIN?secret=...&issuer=...` URI a QR code carries
    (Key Uri Format: algorithm, digits and period spelled out for the stricter apps)."""
    label = quote(f"{issuer}:{login}", safe=":@")
    query = urlencode(
        {
            "secret": secret_base32(secret),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"
