"""Export the pre-signed OCSP answers as files, for a web server or CDN in front.

Each file is named by the RFC 5019 GET path of the request it answers (standard
base64 of the DER OCSPRequest, as the web server sees the path once %2B, %2F and
%3D are decoded; '/' makes subfolders). The nginx configuration in docs/operations.md
serves them.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailpki.errors import InputError
from mailpki.instance.instance import Instance

__all__ = ["EXPORT_MARKER", "OCSPExport", "export_ocsp"]

# Marks a folder as ours: only then are files left from an earlier export removed.
EXPORT_MARKER = ".mailpki-ocsp-export"


@dataclass(frozen=True)
class OCSPExport:
    written: int
    removed: int
    signed: int  # answers that were due and signed before the export
    earliest_next_update: datetime | None  # export again before this


def _check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_MARKER).exists():
        raise InputError(
            f"{out} is not empty and holds no earlier OCSP export; choose an empty folder"
        )


def export_ocsp(
    instance: Instance,
    out: Path,
    *,
    on_signed: Callable[[int], None] | None = None,
    on_written: Callable[[int], None] | None = None,
) -> OCSPExport:
    """Sign what is due, then write every valid pre-signed answer under ``out``
    (files of certificates no longer valid, left by an earlier export, are removed)."""
    _check_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPORT_MARKER).write_text("pre-signed OCSP answers written by mailpki ocsp export\n")
    presigned = instance.ca.presigned
    responder = instance.ca.responder()
    signed = presigned.refresh_all(progress=on_signed).signed
    written: set[Path] = set()
    earliest: datetime | None = None
    for answer in presigned.answers():
        name = base64.b64encode(responder.request_der(answer.serial)).decode("ascii")
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_bytes(answer.der)
        os.replace(temporary, target)  # a web server never serves half a file
        written.add(target)
        if earliest is None or answer.next_update < earliest:
            earliest = answer.next_update
        if on_written is not None:
            on_written(len(written))
    removed = 0
    for path in sorted(out.rglob("*"), reverse=True):
        if path.is_file() and path not in written and path.name != EXPORT_MARKER:
            path.unlink()
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return OCSPExport(len(written), removed, signed, earliest)
