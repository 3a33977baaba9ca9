"""The MIME side of S/MIME (RFC 8551): splitting a mail into the headers that travel
outside and the entity that is signed or encrypted, and building the S/MIME parts.

A signature covers exact bytes, so nothing here re-serialises a message through the
`email` package: header blocks are split by hand, folded lines and all, and the first
part of a multipart/signed is cut out of the raw bytes. Line endings are made CRLF
(the canonical form) before anything is signed or checked.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailpki.errors import InputError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Entity",
    "SMIMEError",
    "canonical",
    "header_value",
    "parse",
    "signed_parts",
]

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 256 * 1024
_BLANK = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
# Headers that describe the content: they go inside the signed / encrypted entity.
_CONTENT_PREFIX = b"content-"


class SMIMEError(InputError):
    """A message that is not the S/MIME (or MIME) it claims to be."""


def canonical(data: bytes) -> bytes:
    """CRLF line endings (RFC 8551 3.1.1): lone LF and lone CR become CRLF."""
    # Fast paths (C-speed counts) for the usual cases: all LF, or already CRLF.
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    crlf = data.count(b"\r\n")
    if crlf == data.count(b"\n") == data.count(b"\r"):
        return data
    return _LINE_END.sub(b"\r\n", data)


@dataclass(frozen=True)
class Entity:
    """A message split into its header fields (raw, unfolded-but-kept) and its body."""

    fields: tuple[tuple[str, bytes], ...]  # (lower-case name, the whole raw field incl. folds)
    body: bytes  # everything after the blank line, as is

    def get(self, name: str) -> bytes | None:
        for key, raw in self.fields:
            if key == name.lower():
                return raw.split(b":", 1)[1].strip()
        return None

    def content_fields(self) -> list[bytes]:
        return [raw for key, raw in self.fields if key.encode().startswith(_CONTENT_PREFIX)]

    def outer_fields(self) -> list[bytes]:
        """Every field but the content ones (and MIME-Version, which we write ourselves)."""
        return [
            raw
            for key, raw in self.fields
            if not key.encode().startswith(_CONTENT_PREFIX) and key != "mime-version"
        ]

    def inner_entity(self, *, for_signing: bool = True) -> bytes:
        """The MIME entity that is signed or encrypted: the Content-* fields and the body,
        canonical. A message without Content-Type is plain text (RFC 2045 5.2).

        For signing, a single part that is not 7-bit clean is re-encoded as base64 (of
        its canonical form), so a 7-bit relay cannot change it and break the signature
        (RFC 8551 3.1.2). A multipart body is left alone (RFC 2045 6.4 forbids encoding
        it; its parts carry their own encodings), and so is anything only encrypted: the
        envelope is binary-safe."""
        fields = self.content_fields()
        if not _declares(fields, b"content-type"):
            fields.insert(0, b"Content-Type: text/plain; charset=us-ascii")
        body = canonical(self.body)
        multipart = content_type(self)[0].startswith("multipart/")
        if for_signing and not multipart and not _is_7bit(body):
            encoding = (self.get("content-transfer-encoding") or b"").strip().lower()
            if encoding != b"base64":
                fields = [
                    f for f in fields if not f.lower().startswith(b"content-transfer-encoding:")
                ]
                fields.append(b"Content-Transfer-Encoding: base64")
                body = _base64_lines(body)
        return canonical(b"\r\n".join(fields) + b"\r\n\r\n") + body


def _declares(fields: list[bytes], name: bytes) -> bool:
    return any(f.lower().startswith(name + b":") for f in fields)


def _is_7bit(body: bytes) -> bool:
    """No NUL, no 8-bit byte, no line over 998 characters (RFC 5322 2.1.1)."""
    return (
        body.isascii()
        and b"\x00" not in body
        and max(map(len, body.split(b"\r\n")), default=0) <= 998
    )


def _base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + b"\r\n"


def parse(data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Entity:
    """Split a message into header fields and body; SMIMEError for anything that is not
    a message (no header block, a header line that is not a field, too large)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SMIMEError("the message must be bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise SMIMEError(f"the message is {len(data)} bytes, over the limit of {max_size}")
    if not data.strip():
        raise SMIMEError("the message is empty")
    match = _BLANK.search(data)
    if match is None:
        head, body = data, b""
    else:
        head, body = data[: match.start()], data[match.end() :]
    if len(head) > MAX_HEADER_BYTES:
        raise SMIMEError("the message's header block is too large")
    fields: list[tuple[str, bytes]] = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t"):  # a folded continuation
            if not fields:
                raise SMIMEError("the message starts with a folded header line")
            key, raw = fields[-1]
            fields[-1] = (key, raw + b"\r\n" + line)
            continue
        name, colon, _ = line.partition(b":")
        if not colon or _FIELD_NAME.fullmatch(name) is None:
            raise SMIMEError(
                "the message has no header block (a line before the first blank line is "
                f"not a 'Name: value' field: {line[:60]!r})"
            )
        fields.append((name.decode("ascii").lower(), line))
    if not fields:
        raise SMIMEError("the message has no header fields")
    return Entity(tuple(fields), body)


def header_value(entity: Entity, name: str) -> str | None:
    """A header's value, decoded (RFC 2047) and unfolded, for reading (From, To, ...)."""
    raw = b"\r\n".join(r for k, r in entity.fields if k == name.lower())
    if not raw:
        return None
    parsed = BytesHeaderParser(policy=compat32).parsebytes(raw + b"\r\n\r\n")
    value = parsed.get(name)
    return None if value is None else str(value)


def content_type(entity: Entity) -> tuple[str, dict[str, str]]:
    """(type/subtype lower-case, parameters) of the entity's Content-Type."""
    raw = b"\r\n".join(r for k, r in entity.fields if k == "content-type")
    if not raw:
        return "text/plain", {}
    parsed = BytesHeaderParser(policy=compat32).parsebytes(raw + b"\r\n\r\n")
    params = {
        str(k).lower(): str(v) for k, v in (parsed.get_params() or [])[1:] if isinstance(v, str)
    }
    return parsed.get_content_type().lower(), params


def new_boundary() -> str:
    return "----=_mailpki_" + secrets.token_hex(12)


def outer_message(entity: Entity, content_type_field: str, body: bytes) -> bytes:
    """The transport headers of `entity`, then MIME-Version and a new Content-Type,
    then `body`; CRLF throughout."""
    fields = [*entity.outer_fields(), b"MIME-Version: 1.0", content_type_field.encode("ascii")]
    return canonical(b"\r\n".join(fields) + b"\r\n\r\n" + body)


def pkcs7_mime_body(der: bytes) -> bytes:
    return _base64_lines(der)


def signed_parts(entity: Entity) -> tuple[bytes, bytes]:
    """(the signed first part, exactly as transmitted but canonical; the signature part's
    decoded bytes) of a multipart/signed message."""
    kind, params = content_type(entity)
    if kind != "multipart/signed":
        raise SMIMEError(f"not a multipart/signed message ({kind})")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise SMIMEError("the multipart/signed message has no usable boundary")
    body = canonical(entity.body)
    delimiter = re.compile(
        rb"(?:^|\r\n)--"
        + re.escape(boundary.encode("ascii", "replace"))
        + rb"(--)?[ \t]*(?:\r\n|$)"
    )
    marks = list(delimiter.finditer(body))
    if len(marks) < 3 or marks[-1].group(1) is None:
        raise SMIMEError(
            "the multipart/signed message does not have two parts and a closing boundary"
        )
    first = body[marks[0].end() : marks[1].start()]
    second = body[marks[1].end() : marks[2].start()]
    signature = parse(second)
    sig_type, _ = content_type(signature)
    if sig_type not in ("application/pkcs7-signature", "application/x-pkcs7-signature"):
        raise SMIMEError(f"the second part is {sig_type}, not an S/MIME signature")
    return first, decode_body(signature)


def decode_body(entity: Entity) -> bytes:
    """The body with its Content-Transfer-Encoding (base64, or binary/7bit/8bit) undone."""
    encoding = (entity.get("content-transfer-encoding") or b"7bit").strip().lower()
    if encoding == b"base64":
        try:
            return base64.b64decode(re.sub(rb"\s+", b"", entity.body), validate=True)
        except (binascii.Error, ValueError):
            raise SMIMEError("the S/MIME part is not valid base64") from None
    if encoding in (b"7bit", b"8bit", b"binary"):
        return entity.body
    raise SMIMEError(f"unsupported Content-Transfer-Encoding {encoding.decode('ascii', 'replace')}")
