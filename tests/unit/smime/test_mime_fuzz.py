"""Hypothesis on the S/MIME message layer: `mime.parse`, `mime.signed_parts`,
`message.verify_message` and `message.decrypt_message` with random and mutated input.

Whatever comes in, only `MailPKIError` subclasses come out, and a signature never
vouches for content other than what was signed. Plus round trips: sign -> verify gives
back the body (printable and 8-bit, LF and CRLF, detached and opaque), encrypt ->
decrypt too.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import re
from email import policy

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from mailpki.errors import MailPKIError
from mailpki.smime.message import (
    decrypt_message,
    encrypt_message,
    sign_message,
    verify_message,
)
from mailpki.smime.mime import canonical, parse, signed_parts
from mailpki.smime.trust import TrustAnchors
from tests.fixtures.smime_pki import root_ca, smime_leaf

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _pki() -> tuple[x509.Certificate, x509.Certificate, rsa.RSAPrivateKey]:
    root, root_key = root_ca("Fuzz Root", organisation="Fuzz Corp")
    leaf, key = smime_leaf(root, root_key, mail="bob@example.com", name="Bob Builder")
    return root, leaf, key


ROOT, LEAF, KEY = _pki()
ANCHORS = TrustAnchors(roots=(ROOT,))

MESSAGE = (
    b"From: Bob Builder <bob@example.com>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: fuzz me\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"The quarterly numbers are 17, 42 and 4711.\r\n"
    b"--\r\n"
    b"Bob\r\n"
)
DETACHED = sign_message(MESSAGE, LEAF, KEY)
OPAQUE = sign_message(MESSAGE, LEAF, KEY, opaque=True)
ENCRYPTED_CBC = encrypt_message(MESSAGE, [LEAF])
ENCRYPTED_GCM = encrypt_message(MESSAGE, [LEAF], cipher="aes256-gcm")
SIGNED_BODY = b"The quarterly numbers are 17, 42 and 4711.\r\n--\r\nBob\r\n"


def _signed_entity(message: bytes) -> tuple[bytes, bytes]:
    """(the content fields, the body) of a verified message, for comparing."""
    entity = parse(message)
    return b"\r\n".join(entity.content_fields()), canonical(entity.body)


EXPECTED = _signed_entity(verify_message(DETACHED, ANCHORS).message)


def test_fixtures_are_valid() -> None:
    for signed in (DETACHED, OPAQUE):
        verified = verify_message(signed, ANCHORS)
        assert verified.valid, verified.verdict.problems
        assert _signed_entity(verified.message) == EXPECTED
        assert EXPECTED[1] == SIGNED_BODY
    for encrypted in (ENCRYPTED_CBC, ENCRYPTED_GCM):
        assert decrypt_message(encrypted, LEAF, KEY).message.endswith(b"\r\n\r\n" + SIGNED_BODY)


# -- strategies -------------------------------------------------------------------------------

HEADER_NAMES = ["From", "To", "Subject", "Content-Type", "Content-Transfer-Encoding",
                "MIME-Version", "X-Junk", "content-type", "Bcc"]  # fmt: skip
CONTENT_TYPES = [
    b"multipart/signed; boundary=B",
    b'multipart/signed; protocol="application/pkcs7-signature"; boundary="B"',
    b"multipart/signed",
    b'multipart/signed; boundary=""',
    b"multipart/signed; boundary=" + b"x" * 300,
    b"application/pkcs7-mime; smime-type=signed-data",
    b"application/pkcs7-mime; smime-type=enveloped-data",
    b"application/pkcs7-mime; smime-type=authEnveloped-data",
    b"application/x-pkcs7-mime",
    b"application/pkcs7-mime; smime-type=\xff\xfe",
    b"text/plain; charset=utf-8",
    b"application/pkcs7-signature",
    b"=?utf-8?b?bXVsdGlwYXJ0?=",
    b"",
]
ENCODINGS = [b"base64", b"7bit", b"8bit", b"binary", b"quoted-printable", b"x-uuencode", b""]


@st.composite
def header_line(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(HEADER_NAMES)).encode()
    if name.lower() == b"content-type":
        value = draw(st.sampled_from(CONTENT_TYPES))
    elif name.lower() == b"content-transfer-encoding":
        value = draw(st.sampled_from(ENCODINGS))
    elif name == b"From":
        value = draw(
            st.sampled_from(
                [b"bob@example.com", b"<bob@example.com>", b"a@b, c@d", b"", b"\xff@\xfe", b"x"]
            )
        )
    else:
        value = draw(st.binary(max_size=40).filter(lambda v: b"\n" not in v and b"\r" not in v))
    fold = draw(st.sampled_from([b"", b"\r\n ", b"\n\t"]))
    return name + b": " + fold + value


@st.composite
def body_piece(draw: st.DrawFn) -> bytes:
    return draw(
        st.one_of(
            st.sampled_from(
                [
                    b"--B",
                    b"--B--",
                    b"--B  ",
                    b"\r\n",
                    b"\n",
                    b"\r",
                    b"Content-Type: application/pkcs7-signature",
                    b"Content-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64",
                    b"Content-Type: text/plain",
                    b"MIIB",
                    b"====",
                    b"\x00",
                    b"\xff" * 3,
                ]
            ),
            st.binary(max_size=30),
            st.builds(lambda b: base64.b64encode(b), st.binary(max_size=60)),
        )
    )


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Random bytes that look more or less like a (S/MIME) message."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=800))
    headers = draw(st.lists(header_line(), max_size=6))
    sep = draw(st.sampled_from([b"\r\n", b"\n"]))
    body = draw(st.lists(body_piece(), max_size=25))
    joiner = draw(st.sampled_from([b"\r\n", b"\n", b""]))
    return sep.join(headers) + sep + sep + joiner.join(body)


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete", "dup-boundary",
                                     "dup-line", "drop-line", "swap-lines", "truncate"]))  # fmt: skip
        at = draw(st.integers(min_value=0, max_value=len(data) - 1))
        if kind == "flip":
            data[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif kind == "cut":
            end = draw(st.integers(min_value=at, max_value=min(len(data), at + 200)))
            del data[at:end]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=20))
        elif kind == "delete":
            del data[at]
        elif kind == "truncate":
            del data[at:]
        else:
            lines = bytes(data).split(b"\r\n")
            if kind == "dup-boundary":
                marks = [i for i, line in enumerate(lines) if line.startswith(b"--")]
                if not marks:
                    continue
                source = lines[draw(st.sampled_from(marks))]
                lines.insert(draw(st.integers(min_value=0, max_value=len(lines))), source)
            elif kind == "dup-line":
                i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
                lines.insert(draw(st.integers(min_value=0, max_value=len(lines))), lines[i])
            elif kind == "drop-line":
                del lines[draw(st.integers(min_value=0, max_value=len(lines) - 1))]
            elif kind == "swap-lines" and len(lines) > 1:
                i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
                j = draw(st.integers(min_value=0, max_value=len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


# -- only MailPKIError ------------------------------------------------------------------------


def _only_mailpki_errors(func: object, *args: object) -> object:
    try:
        return func(*args)  # type: ignore[operator]
    except MailPKIError:
        return None


@fuzz(400)
@given(messages())
@example(b"")
@example(b"\r\n\r\n")
@example(b" folded: first\r\n\r\n")
@example(b"From bob@example.com Tue Nov 24\r\nTo: x\r\n\r\nbody")
@example(b"Content-Type: multipart/signed; boundary=B\r\n\r\n--B\r\n--B\r\n--B--\r\n")
@example(b"Content-Type: multipart/signed; boundary=\xff\r\n\r\n--\xff\r\nx\r\n--\xff--\r\n")
def test_parse_and_signed_parts_raise_only_mailpki_errors(data: bytes) -> None:
    entity = _only_mailpki_errors(parse, data)
    if entity is not None:
        _only_mailpki_errors(signed_parts, entity)


@fuzz(300)
@given(messages())
@example(b"Content-Type: application/pkcs7-mime\r\n\r\nMIIB")
@example(
    b"From: bob@example.com\r\nContent-Type: multipart/signed; boundary=B\r\n\r\n"
    b"--B\r\nhi\r\n--B\r\nContent-Type: application/pkcs7-signature\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nMIIB\r\n--B--\r\n"
)
def test_verify_and_decrypt_raise_only_mailpki_errors(data: bytes) -> None:
    verified = _only_mailpki_errors(verify_message, data, ANCHORS)
    assert verified is None or not verified.valid  # type: ignore[attr-defined]
    _only_mailpki_errors(decrypt_message, data, LEAF, KEY)


@fuzz(400)
@given(st.data(), st.sampled_from(["detached", "opaque"]))
def test_mutated_signed_message_never_vouches_for_other_content(
    data: st.DataObject, kind: str
) -> None:
    original = DETACHED if kind == "detached" else OPAQUE
    message = data.draw(mutated(original))
    try:
        entity = parse(message)
        if kind == "detached":
            _only_mailpki_errors(signed_parts, entity)
        verified = verify_message(message, ANCHORS)
    except MailPKIError:
        return
    # The signature checked out: it can only be over the content Bob signed.
    assert _signed_entity(verified.message) == EXPECTED, message
    if verified.valid:
        assert verified.from_addresses == ("bob@example.com",)


@fuzz(150)
@given(st.data(), st.sampled_from(["cbc", "gcm"]))
def test_mutated_encrypted_message_raises_only_mailpki_errors(
    data: st.DataObject, cipher: str
) -> None:
    original = ENCRYPTED_CBC if cipher == "cbc" else ENCRYPTED_GCM
    message = data.draw(mutated(original))
    try:
        opened = decrypt_message(message, LEAF, KEY)
    except MailPKIError:
        return
    if cipher == "gcm":
        # Authenticated: whatever decrypts is what was encrypted.
        assert opened.message.endswith(b"\r\n\r\n" + SIGNED_BODY)


def test_body_modified_is_never_valid() -> None:
    # A few deterministic tamperings of the signed text itself.
    for original in (DETACHED,):
        for old, new in [
            (b"17, 42", b"17, 43"),
            (b"Bob\r\n", b"Bob\r\nP.S. send money\r\n"),
            (b"quarterly", b"QUARTERLY"),
            (b"Content-Type: text/plain; charset=us-ascii", b"Content-Type: text/html"),
        ]:
            tampered = original.replace(old, new, 1)
            assert tampered != original
            with pytest.raises(MailPKIError):
                verify_message(tampered, ANCHORS)


# -- round trips --------------------------------------------------------------------------------

PRINTABLE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from(["\n"]),
    max_size=400,
)
EIGHT_BIT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"),
    max_size=300,
)


def _decoded_body(message: bytes) -> bytes:
    parsed = email.message_from_bytes(message, policy=policy.compat32)
    payload = parsed.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def _lf(data: bytes) -> bytes:
    return re.sub(rb"\r\n|\r", b"\n", data)


@fuzz(60)
@given(
    body=st.one_of(PRINTABLE, EIGHT_BIT),
    crlf=st.booleans(),
    opaque=st.booleans(),
    content_type=st.sampled_from([None, "text/plain; charset=utf-8"]),
)
@example(body="", crlf=False, opaque=False, content_type=None)
@example(body="Grüße\n", crlf=True, opaque=True, content_type="text/plain; charset=utf-8")
@example(body="x" * 1200 + "\n", crlf=False, opaque=False, content_type=None)
@example(body="From the start\n.\n--\n", crlf=True, opaque=False, content_type=None)
def test_sign_verify_round_trip(
    body: str, crlf: bool, opaque: bool, content_type: str | None
) -> None:
    raw = body.encode("utf-8")
    head = "From: bob@example.com\nTo: alice@example.com\nSubject: round trip\n"
    if content_type:
        head += f"Content-Type: {content_type}\n"
    message = head.encode() + b"\n" + raw
    if crlf:
        message = message.replace(b"\n", b"\r\n")
    signed = sign_message(message, LEAF, KEY, opaque=opaque)
    assert signed.startswith(b"From: bob@example.com\r\n")
    verified = verify_message(signed, ANCHORS)
    assert verified.valid, verified.verdict.problems
    assert verified.from_addresses == ("bob@example.com",)
    # The body comes back (line ends made canonical; 8-bit text as base64).
    assert _lf(_decoded_body(verified.message)) == _lf(raw)
    if content_type:
        assert f"Content-Type: {content_type}".encode() in verified.message


@fuzz(25)
@given(
    body=st.one_of(PRINTABLE, EIGHT_BIT),
    crlf=st.booleans(),
    cipher=st.sampled_from(["aes256-cbc", "aes256-gcm"]),
    transport=st.sampled_from(["pkcs1v15", "oaep"]),
)
def test_encrypt_decrypt_round_trip(body: str, crlf: bool, cipher: str, transport: str) -> None:
    raw = body.encode("utf-8")
    message = b"From: bob@example.com\nTo: bob@example.com\nSubject: s\n\n" + raw
    if crlf:
        message = message.replace(b"\n", b"\r\n")
    encrypted = encrypt_message(message, [LEAF], cipher=cipher, key_transport=transport)  # type: ignore[arg-type]
    assume(encrypted)
    opened = decrypt_message(encrypted, LEAF, KEY)
    assert opened.cipher == cipher and opened.key_transport == transport
    assert _lf(_decoded_body(opened.message)) == _lf(raw)


def test_sign_then_encrypt_8bit_part_verifies_after_decrypt() -> None:
    message = (
        b"From: bob@example.com\r\nTo: bob@example.com\r\nSubject: x\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "Grüße\r\n".encode()
    )
    signed = sign_message(message, LEAF, KEY)
    assert verify_message(signed, ANCHORS).valid
    opened = decrypt_message(encrypt_message(signed, [LEAF]), LEAF, KEY)
    assert b"multipart/signed" in opened.message
    assert b"Content-Transfer-Encoding: base64\r\n\r\n" not in opened.message.split(b"--", 1)[0]
    assert verify_message(opened.message, ANCHORS).valid


def test_8bit_text_is_canonical_before_base64() -> None:
    message = "From: bob@example.com\nTo: x@example.com\n\nGrüße\nzweite Zeile\n".encode()
    signed = sign_message(message, LEAF, KEY)
    verified = verify_message(signed, ANCHORS)
    assert verified.valid
    assert _decoded_body(verified.message) == "Grüße\r\nzweite Zeile\r\n".encode()
