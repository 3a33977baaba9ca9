"""What a person may choose as the password of their PKCS#12 file.

A rule, not a store: nothing here keeps or logs a password. The file's key is derived
from the password with 600,000 PBKDF2 rounds (keymanager.pkcs12), so the rules aim at
what guessing lists try first, not at entropy estimates.
"""

from __future__ import annotations

import re
import unicodedata

from mailpki.errors import InputError

__all__ = ["MAX_PASSWORD", "check_password"]

MAX_PASSWORD = 256
# A few of the passwords every cracking list starts with (the rest of the check is length
# and variety); matched after lower-casing and stripping digits and punctuation.
_COMMON = {
    "password", "passwort", "motdepasse", "qwerty", "qwertz", "azerty", "letmein",
    "welcome", "willkommen", "bienvenue", "admin", "secret", "iloveyou", "monkey",
    "dragon", "sunshine", "football", "princess", "abc", "changeme", "summer", "winter",
}  # fmt: skip
# What people put for letters (P@ssw0rd): undone before the list is checked.
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "@": "a", "$": "s", "5": "s", "7": "t", "!": "i"}
)


def check_password(
    password: str, confirm: str, *, min_length: int, avoid: tuple[str, ...]
) -> bytes:
    """A chosen PKCS#12 password, checked: long enough, varied, not a name or a classic.
    The message says what to change; nothing is stored."""
    if password != confirm:
        raise InputError("the two passwords differ")
    if len(password) > MAX_PASSWORD:
        raise InputError(f"the password is longer than {MAX_PASSWORD} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise InputError("the password contains control characters")
    if len(password) < min_length:
        raise InputError(f"the password needs at least {min_length} characters")
    classes = sum(
        bool(re.search(pattern, password))
        for pattern in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]")
    )
    if classes < 3 and len(password) < 2 * min_length:
        raise InputError(
            "the password needs three of: lower case, upper case, digits, other characters "
            f"(or at least {2 * min_length} characters)"
        )
    if len(set(password)) < min(8, max(5, len(password) // 3)):
        raise InputError("the password repeats too few different characters")
    lowered = password.lower()
    # The word itself, with the digits and signs people tack on at either end dropped,
    # as written and with its look-alike letters undone (P@ssw0rd1234! -> password).
    trimmed = re.sub(r"^[\W\d_]+|[\W\d_]+$", "", lowered)
    cores = {re.sub(r"[^a-z]", "", trimmed), re.sub(r"[^a-z]", "", trimmed.translate(_LEET))}
    if cores & _COMMON or any(core == word * 2 for core in cores for word in _COMMON):
        raise InputError("that password is on every attacker's list: choose another")
    for word in avoid:
        if len(word) >= 3 and word.lower() in lowered:
            raise InputError("the password must not contain your name, login or mail address")
    try:
        return password.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("the password contains characters that cannot be encoded") from None
