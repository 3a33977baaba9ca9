"""gpgsm 2.2's PKCS#12 KDF fault, modelled (`_pkcs12_order._gpgsm_agrees`), and the
legacy files `build_pkcs12` makes never hitting it. The model is checked here against a
transcription of gpgsm's derivation; tests/integration/test_pkcs12_peers.py checks it
against the real gpgsm."""

from __future__ import annotations

import hashlib
import random

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailpki.errors import MailPKIError
from mailpki.keymanager import pkcs12 as pkcs12_module
from mailpki.keymanager._pkcs12_order import (
    _gpgsm_agrees,
    gpgsm_derives_the_same_keys,
    pkcs12_kdf_sha1,
)
from mailpki.keymanager.pkcs12 import READABLE_ALPHABET, build_pkcs12, generate_password
from tests.unit.keymanager.test_pkcs12 import Chain


def gpgsm_kdf(password: bytes, salt: bytes, rounds: int, size: int) -> bytes:
    """minip12.c string_to_key (purpose 1): like RFC 7292, except that each updated block
    is written back with gcry_mpi_print, which leaves out leading zero bytes and puts the
    shorter number at the start of the 64-byte buffer (the rest of it keeps old bytes)."""
    bmp = password.decode().encode("utf-16-be") + b"\0\0"
    buf_i = bytearray((salt * 64)[:64] + (bmp * 64)[:64])
    out = b""
    while True:
        digest = hashlib.sha1(b"\x01" * 64 + bytes(buf_i)).digest()
        for _ in range(rounds - 1):
            digest = hashlib.sha1(digest).digest()
        out += digest
        if len(out) >= size:
            return out[:size]
        b_value = int.from_bytes((digest * 4)[:64], "big") + 1
        for start in (0, 64):
            number = (int.from_bytes(buf_i[start : start + 64], "big") + b_value) % (1 << 512)
            printed = number.to_bytes(64, "big").lstrip(b"\0")
            buf_i[start : start + len(printed)] = printed


def test_the_model_says_when_gpgsm_derives_another_key() -> None:
    rng = random.Random(7)
    verdicts = []
    for _ in range(1500):  # the same passwords and salts each run
        password = "".join(rng.choice(READABLE_ALPHABET) for _ in range(23)).encode()
        salt = rng.randbytes(8)
        same = gpgsm_kdf(password, salt, 3, 24) == pkcs12_kdf_sha1(password, salt, 1, 3, 24)
        assert _gpgsm_agrees(password, salt, 3) == same
        verdicts.append(same)
    assert verdicts.count(False) >= 3  # the fault is real and was met (~1 in 128)
    assert verdicts.count(True) > 1400


def test_legacy_files_are_always_ones_gpgsm_can_open() -> None:
    chain = Chain()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = chain.leaf(key)
    for _ in range(60):
        password = generate_password().encode()
        data = build_pkcs12(key, leaf, chain.cas, password, friendly_name="A", legacy=True)
        assert gpgsm_derives_the_same_keys(data, password)


def test_a_file_gpgsm_would_misread_is_made_again(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = Chain()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    answers = iter([False, False, True])
    checked: list[bytes] = []

    def verdict(data: bytes, password: bytes) -> bool:
        checked.append(data)
        return next(answers)

    monkeypatch.setattr(pkcs12_module, "gpgsm_derives_the_same_keys", verdict)
    data = build_pkcs12(key, chain.leaf(key), chain.cas, b"pw-1234567890", friendly_name="A",
                        legacy=True)  # fmt: skip
    assert len(checked) == 3 and data == checked[-1]
    assert len(set(checked)) == 3  # each build drew fresh salts

    monkeypatch.setattr(pkcs12_module, "gpgsm_derives_the_same_keys", lambda *_: False)
    with pytest.raises(MailPKIError, match="gpgsm"):
        build_pkcs12(key, chain.leaf(key), chain.cas, b"pw-1234567890", friendly_name="A",
                     legacy=True)  # fmt: skip
