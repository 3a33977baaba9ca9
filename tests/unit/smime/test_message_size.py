"""One size limit for every mail operation: what sign and encrypt write, decrypt and
verify read. Around a small limit, for bodies that grow differently (7-bit text, LF
text that becomes CRLF, 8-bit bytes carried as base64), each operation either refuses
before doing anything or writes a message no larger than the limit, which the reverse
operation then accepts."""

from __future__ import annotations

import os
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from mailpki.smime.message import (
    MAX_MESSAGE_BYTES,
    check_fits,
    decrypt_message,
    encrypt_message,
    sign_message,
    verify_message,
)
from mailpki.smime.mime import SMIMEError
from mailpki.smime.trust import TrustAnchors
from tests.fixtures.smime_pki import root_ca, smime_leaf

LIMIT = 48 * 1024
HEAD = b"From: bob@example.com\r\nTo: bob@example.com\r\nSubject: size\r\n"


@cache
def pki() -> tuple[x509.Certificate, x509.Certificate, rsa.RSAPrivateKey]:
    root, root_key = root_ca("Size Root", organisation="Example Corp")
    leaf, key = smime_leaf(root, root_key, mail="bob@example.com", name="Bob")
    return root, leaf, key


def message(kind: str, size: int) -> bytes:
    if kind == "text":
        line = b"the quick brown fox jumps over the lazy dog 0123456789\r\n"
        body = (line * (size // len(line) + 1))[:size]
        return HEAD + b"Content-Type: text/plain\r\n\r\n" + body
    if kind == "lf-text":  # every LF becomes CRLF: the entity grows by half
        body = (b"ab\n" * (size // 3 + 1))[:size]
        return HEAD.replace(b"\r\n", b"\n") + b"Content-Type: text/plain\n\n" + body
    body = os.urandom(size)  # 8-bit: signed as base64
    return HEAD + b"Content-Type: application/octet-stream\r\n\r\n" + body


SIZES = [LIMIT * n // 32 for n in range(8, 33)]


def attempt(op: str, data: bytes) -> bytes | None:
    root, leaf, key = pki()
    try:
        if op == "sign":
            return sign_message(data, leaf, key, chain=[root], max_size=LIMIT)
        if op == "sign-opaque":
            return sign_message(data, leaf, key, chain=[root], opaque=True, max_size=LIMIT)
        if op == "encrypt":
            return encrypt_message(data, [leaf], max_size=LIMIT)
        check_fits(data, signer_certificates=[leaf, root], recipients=[leaf], max_size=LIMIT)
        signed = sign_message(data, leaf, key, chain=[root], max_size=LIMIT)
        return encrypt_message(signed, [leaf], max_size=LIMIT)
    except SMIMEError as exc:
        assert "over the limit" in str(exc) and "\n" not in str(exc)
        return None


@pytest.mark.parametrize("kind", ["text", "lf-text", "binary"])
@pytest.mark.parametrize("op", ["sign", "sign-opaque", "encrypt", "sign-encrypt"])
def test_what_is_written_is_read_back(op: str, kind: str) -> None:
    root, leaf, key = pki()
    anchors = TrustAnchors((root,))
    written = 0
    for size in SIZES:
        data = message(kind, size)
        out = attempt(op, data)
        if out is None:
            continue
        written += 1
        assert len(out) <= LIMIT, (op, kind, size, len(out))
        if op in ("encrypt", "sign-encrypt"):
            out = decrypt_message(out, leaf, key, max_size=LIMIT).message
        if op != "encrypt":
            assert verify_message(out, anchors, max_size=LIMIT).valid
    # The bound is not so loose that it refuses what clearly fits.
    assert written >= 3, (op, kind)


@pytest.mark.parametrize("op", ["sign-opaque", "encrypt"])
def test_a_message_just_under_the_limit_is_refused_when_base64_would_push_it_over(
    op: str,
) -> None:
    data = message("text", LIMIT - 1024)
    with pytest.raises(SMIMEError, match="over the limit of 49,152 bytes"):
        if op == "encrypt":
            encrypt_message(data, [pki()[1]], max_size=LIMIT)
        else:
            sign_message(data, pki()[1], pki()[2], opaque=True, max_size=LIMIT)


def test_the_limit_is_the_same_for_every_operation() -> None:
    import inspect

    for function in (sign_message, encrypt_message, decrypt_message, verify_message, check_fits):
        default = inspect.signature(function).parameters["max_size"].default
        assert default == MAX_MESSAGE_BYTES == 64 * 1024 * 1024, function.__name__
