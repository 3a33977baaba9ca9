"""The names of the key types and usages, without the cryptography behind them.

Settings and command options check these names; `keystore.keys` makes the keys.
"""

from __future__ import annotations

from typing import Literal, get_args

KeyType = Literal["rsa2048", "rsa3072", "rsa4096", "p256", "p384"]
KEY_TYPES: tuple[str, ...] = get_args(KeyType)
# What a key is generated for: CA keys sign; the Key Recovery Service's transport
# key decrypts (RSA-OAEP). One key never does both (key separation).
KeyUsage = Literal["sign", "decrypt"]
KEY_USAGES: tuple[str, ...] = get_args(KeyUsage)
# What `init --ca-key-type` offers for root and issuing CA (RSA-2048 is too small for a CA).
CA_KEY_TYPES: tuple[str, ...] = ("rsa3072", "rsa4096", "p256", "p384")

__all__ = ["CA_KEY_TYPES", "KEY_TYPES", "KEY_USAGES", "KeyType", "KeyUsage"]
