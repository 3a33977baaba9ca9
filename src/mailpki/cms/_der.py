"""Byte-level helpers shared by the CMS modules: PEM unarmouring, BER→DER
normalising of streamed messages, minimal TLV reading and one-line error text.

Every function raises CMSError, and nothing else, for malformed input.
"""

from __future__ import annotations

import base64
import binascii
import re

from mailpki.base.pem import require_single_block
from mailpki.errors import CMSError, InputError

PEM_LABELS = ("PKCS7", "CMS")
MAX_DEPTH = 64  # nesting of BER elements; real messages stay far below
_PEM_ARMOUR = re.compile(rb"-----(BEGIN|END) [A-Z0-9 ]+-----")


def unarmour(data: bytes) -> bytes:
    """DER/BER bytes of `data`, removing PEM armour if there is any."""
    if not data.lstrip().startswith(b"-----BEGIN"):
        return data
    try:
        require_single_block(data, PEM_LABELS, "CMS message")
    except InputError as exc:
        raise CMSError(str(exc)) from exc
    body = b"".join(_PEM_ARMOUR.sub(b"", data).split())
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise CMSError("the PEM CMS message is not valid base64") from exc


def definite_lengths(data: bytes) -> bytes:
    """`data` with every indefinite length made definite and every constructed
    OCTET STRING joined into one, i.e. the BER of a streaming encoder turned into
    what asn1crypto parses reliably (it mis-parses an indefinite-length CHOICE
    such as SignerIdentifier or Name). Definite-length elements without such
    parts inside, certificates in particular, keep their exact bytes.

    Only UNIVERSAL constructed OCTET STRINGs (tag 0x24) are joined: an IMPLICITly
    tagged one (EnvelopedData's encryptedContent [0]) cannot be told from other
    constructed [0] elements without the schema; see `join_octet_chunks`."""
    end, replacement = _normalise(data, 0, len(data), 0)
    if end != len(data):
        raise CMSError("the CMS message has trailing data after its end")
    return data if replacement is None else replacement


def _normalise(buf: bytes, pos: int, limit: int, depth: int) -> tuple[int, bytes | None]:
    """(end, re-encoding) of the element at `pos`; re-encoding is None when the
    original bytes buf[pos:end] are already fine."""
    if depth > MAX_DEPTH:
        raise CMSError("the CMS message is nested too deeply")
    start = pos
    if pos >= limit:
        raise CMSError("the CMS message is truncated")
    constructed = bool(buf[pos] & 0x20)
    if buf[pos] & 0x1F == 0x1F:  # high tag number: base-128 continuation octets
        pos += 1
        while pos < limit and buf[pos] & 0x80:
            pos += 1
    pos += 1
    if pos >= limit:
        raise CMSError("the CMS message is truncated")
    tag = buf[start:pos]
    length_octet = buf[pos]
    pos += 1

    children: list[tuple[int, int, bytes | None]] = []
    if length_octet == 0x80:  # indefinite: children up to an end-of-contents 00 00
        if not constructed:
            raise CMSError("the CMS message has an indefinite length on a primitive element")
        while buf[pos : pos + 2] != b"\0\0" or pos + 2 > limit:
            child_end, child = _normalise(buf, pos, limit, depth + 1)
            children.append((pos, child_end, child))
            pos = child_end
        end = pos + 2
    else:
        if length_octet & 0x80:
            count = length_octet & 0x7F
            if count > 4 or pos + count > limit:
                raise CMSError("the CMS message has an invalid length")
            length = int.from_bytes(buf[pos : pos + count], "big")
            pos += count
        else:
            length = length_octet
        end = pos + length
        if end > limit:
            raise CMSError("the CMS message is truncated")
        if not constructed:
            return end, None
        while pos < end:
            child_end, child = _normalise(buf, pos, end, depth + 1)
            children.append((pos, child_end, child))
            pos = child_end
        if tag != b"\x24" and all(child is None for _, _, child in children):
            return end, None

    parts = [buf[s:e] if child is None else child for s, e, child in children]
    if tag == b"\x24":  # constructed OCTET STRING: DER wants one primitive string
        contents = b"".join(octets(part) for part in parts)
        return end, b"\x04" + der_length(len(contents)) + contents
    contents = b"".join(parts)
    return end, tag + der_length(len(contents)) + contents


def elements(buf: bytes) -> list[bytes]:
    """The encoded elements one after another in `buf` (e.g. the contents of a SET OF),
    read without any schema; CMSError if they do not fill it exactly."""
    found = []
    pos = 0
    while pos < len(buf):
        end, replacement = _normalise(buf, pos, len(buf), 0)
        found.append(buf[pos:end] if replacement is None else replacement)
        pos = end
    return found


def octets(element: bytes) -> bytes:
    """Contents of a chunk of a constructed OCTET STRING (itself normalised)."""
    if element[:1] != b"\x04":
        raise CMSError("the CMS message has a constructed OCTET STRING with a foreign chunk")
    length_octet = element[1]
    header = 2 + (length_octet & 0x7F if length_octet & 0x80 else 0)
    return element[header:]


def der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def read_tlv(buf: bytes, pos: int, limit: int) -> tuple[int, int, int]:
    """(tag octet, contents start, end) of the definite-length element at `pos`
    with a low tag number, as `definite_lengths` leaves them."""
    if pos + 2 > limit:
        raise CMSError("the CMS message is truncated")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise CMSError("the CMS message has an unexpected high tag number")
    length_octet = buf[pos + 1]
    pos += 2
    if length_octet & 0x80:
        count = length_octet & 0x7F
        if count == 0 or count > 4 or pos + count > limit:
            raise CMSError("the CMS message has an invalid length")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    else:
        length = length_octet
    if pos + length > limit:
        raise CMSError("the CMS message is truncated")
    return tag, pos, pos + length


def children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, contents start, end) of each element in buf[start:end]."""
    found = []
    pos = start
    while pos < end:
        tag, contents, element_end = read_tlv(buf, pos, end)
        found.append((tag, pos, contents, element_end))
        pos = element_end
    return found


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
