"""Strict PEM framing for outside input: one block of an expected kind, nothing else."""

from __future__ import annotations

import re

from mailpki.errors import InputError

# Body: base64 lines, plus RFC 1421 headers (Proc-Type, DEK-Info) of legacy encrypted keys.
_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n[A-Za-z0-9+/=\r\n:, -]+?-----END \1-----")


def require_single_block(data: bytes, labels: tuple[str, ...], what: str) -> None:
    """InputError unless `data` is exactly one PEM block labelled one of `labels`,
    with only whitespace around it (junk around a block is refused, not skipped)."""
    stripped = data.strip()
    blocks = _BLOCK.findall(stripped)
    if not blocks:
        if any(f"-----BEGIN {label}-----".encode() in stripped for label in labels):
            raise InputError(f"the PEM {what} is truncated or damaged")
        raise InputError(f"not a PEM {what} (expected '-----BEGIN {labels[0]}-----')")
    if len(blocks) != 1 or _BLOCK.fullmatch(stripped) is None:
        raise InputError(f"the file must hold exactly one PEM {what} and nothing else")
    if blocks[0].decode() not in labels:
        raise InputError(f"the file holds a PEM '{blocks[0].decode()}', not a {what}")
