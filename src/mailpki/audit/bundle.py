"""An exported audit log (a folder), and its verification on a machine with no instance.

The folder holds::

    manifest.json              format, instance id, head (seq, hash), export time
    records.jsonl              every record: seq, time, event, actor, data, prev_hash, hash
    checkpoints.jsonl          every checkpoint, one mailpki-checkpoint/1 line each
    audit-key.pub.pem          the ECDSA audit public key
    audit-key-mldsa.pub.pem    the ML-DSA-65 audit public key (once the instance has one)
    witness-recovery-service.jsonl   the recovery service's countersigned copy, if read
    latest-checkpoint.json     the newest checkpoint's signed payload, byte for byte
    latest-checkpoint.ecdsa.der / .mldsa.sig   its signatures (for openssl and friends)

``verify_bundle`` loads the records into a private in-memory database and runs the very
same verifier as ``mailpki audit verify``, then checks the log against the witness copies
the auditor brings (``--witness FILE``: a witness file or a saved checkpoint mail).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from mailpki.audit.keys import AuditKeys, pq_required_from
from mailpki.audit.log import HEAD_ID
from mailpki.audit.verify import Problem, VerifyReport, verify_log
from mailpki.audit.witness import (
    LINE_FORMAT,
    SignedCheckpoint,
    WitnessCopy,
    check_copy,
    never_sealed,
    parse_lines,
    witness_text,
)
from mailpki.errors import AuditError
from mailpki.store.models import AuditCheckpoint, AuditHead, AuditRecord, Base

__all__ = ["BUNDLE_FORMAT", "BundleCheck", "verify_bundle", "write_bundle"]

BUNDLE_FORMAT = "mailpki-audit-bundle/1"
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
CLASSIC_KEY = "audit-key.pub.pem"
MLDSA_KEY = "audit-key-mldsa.pub.pem"
KRS_COPY = "witness-recovery-service.jsonl"
RECORD_FIELDS = ("seq", "time", "event", "actor", "data", "prev_hash", "hash")
MAX_LINE = 1024 * 1024
MAX_TEXT = 256 * 1024 * 1024


def write_bundle(
    out: Path,
    *,
    keys: AuditKeys,
    head: tuple[int, str] | None,
    records: Iterator[dict[str, Any]],
    checkpoints: list[SignedCheckpoint],
    krs_copy: list[dict[str, Any]] | None,
    exported_at: str,
) -> int:
    """Write the folder (it must not exist, or be empty); returns the number of records."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AuditError(f"{out} exists and is not an empty folder: choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    with (out / RECORDS).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            count += 1
    instance = keys.instance_id
    (out / CHECKPOINTS).write_text("".join(c.to_line(instance) + "\n" for c in checkpoints))
    (out / CLASSIC_KEY).write_text(keys.classic_pem)
    if keys.mldsa_pem is not None:
        (out / MLDSA_KEY).write_text(keys.mldsa_pem)
    if krs_copy is not None:
        (out / KRS_COPY).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in krs_copy))
    if checkpoints:
        latest = checkpoints[-1]
        (out / "latest-checkpoint.json").write_bytes(latest.payload)
        (out / "latest-checkpoint.ecdsa.der").write_bytes(latest.signature)
        if latest.pq_signature:
            (out / "latest-checkpoint.mldsa.sig").write_bytes(latest.pq_signature)
    manifest = {
        "format": BUNDLE_FORMAT,
        "instance": instance,
        "exported_at": exported_at,
        "records": count,
        "checkpoints": len(checkpoints),
        "head": None if head is None else {"seq": head[0], "hash": head[1]},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return count


@dataclass(frozen=True)
class BundleCheck:
    """The verdict on a bundle: the log itself and each witness copy checked against it."""

    instance: str
    log: VerifyReport
    witnesses: tuple[tuple[WitnessCopy, tuple[Problem, ...]], ...]
    manifest: tuple[Problem, ...] = ()

    @property
    def problems(self) -> tuple[Problem, ...]:
        found = list(self.log.problems) + list(self.manifest)
        unsealed = never_sealed(self.log)
        if unsealed is not None:
            found.append(unsealed)
        for _, problems in self.witnesses:
            found.extend(problems)
        return tuple(found)

    @property
    def ok(self) -> bool:
        return not self.problems and self.log.omitted == 0


def _read_lines(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise AuditError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        number = 0
        while True:
            number += 1
            try:
                line = handle.readline(MAX_LINE + 1)
            except UnicodeDecodeError:
                raise AuditError(f"{path.name} line {number}: not UTF-8 text") from None
            if not line:
                return
            if len(line) > MAX_LINE:
                raise AuditError(f"{path.name} line {number}: too long")
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except (ValueError, RecursionError):
                raise AuditError(f"{path.name} line {number}: not valid JSON") from None


def _record(number: int, raw: Any) -> AuditRecord:
    if not isinstance(raw, dict) or set(raw) != set(RECORD_FIELDS):
        raise AuditError(f"{RECORDS} line {number}: a record has exactly {list(RECORD_FIELDS)}")
    seq = raw["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not -(2**63) < seq < 2**63:
        raise AuditError(f"{RECORDS} line {number}: 'seq' must be a whole number")
    if not all(isinstance(raw[k], str) for k in RECORD_FIELDS[1:]):
        raise AuditError(f"{RECORDS} line {number}: fields other than 'seq' must be text")
    return AuditRecord(**raw)


def _read_text(path: Path, what: str) -> str:
    """A whole (small) file of the bundle as UTF-8 text; AuditError if it is not."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TEXT + 1)
    except OSError as exc:
        raise AuditError(f"cannot read the bundle's {what} {path.name}: {exc.strerror}") from None
    if len(data) > MAX_TEXT:
        raise AuditError(f"the bundle's {what} {path.name} is larger than {MAX_TEXT} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise AuditError(f"the bundle's {what} {path.name} is not UTF-8 text") from None


def _manifest(folder: Path) -> dict[str, Any]:
    if not (folder / MANIFEST).is_file():
        raise AuditError(f"{folder} is not an audit bundle (no {MANIFEST})")
    try:
        raw = json.loads(_read_text(folder / MANIFEST, "manifest"))
    except (ValueError, RecursionError):
        raise AuditError(f"{folder / MANIFEST} is not valid JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != BUNDLE_FORMAT:
        raise AuditError(f"{folder} is not a {BUNDLE_FORMAT} bundle")
    head = raw.get("head")
    if head is not None and not (
        isinstance(head, dict)
        and set(head) == {"seq", "hash"}
        and isinstance(head["seq"], int)
        and not isinstance(head["seq"], bool)
        and 0 <= head["seq"] < 2**63
        and isinstance(head["hash"], str)
        and len(head["hash"]) == 64
    ):
        raise AuditError(f'{folder / MANIFEST}: \'head\' must be {{"seq": n, "hash": 64 hex}}')
    return raw


def _keys(folder: Path) -> AuditKeys:
    try:
        classic = (folder / CLASSIC_KEY).read_bytes()
    except OSError:
        raise AuditError(f"the bundle lacks its audit public key ({CLASSIC_KEY})") from None
    pq = folder / MLDSA_KEY
    return AuditKeys.from_pem(classic, pq.read_bytes() if pq.is_file() else None)


def _load(session: Session, folder: Path, manifest: dict[str, Any]) -> None:
    pending: list[AuditRecord] = []
    for number, raw in _read_lines(folder / RECORDS):
        pending.append(_record(number, raw))
        if len(pending) >= 1000:
            session.add_all(pending)
            session.flush()
            pending = []
    session.add_all(pending)
    text = (
        _read_text(folder / CHECKPOINTS, "checkpoints") if (folder / CHECKPOINTS).is_file() else ""
    )
    for checkpoint in parse_lines(text):
        session.add(
            AuditCheckpoint(
                seq=checkpoint.seq,
                hash=checkpoint.hash,
                time=checkpoint.time,
                signature=checkpoint.signature,
                pq_signature=checkpoint.pq_signature,
            )
        )
    head = manifest.get("head")
    if isinstance(head, dict):  # checked by _manifest
        session.add(AuditHead(id=HEAD_ID, seq=head["seq"], hash=head["hash"]))
    try:
        session.flush()
    except Exception as exc:  # duplicate seqs and the like: the bundle was edited
        raise AuditError(
            f"the bundle's records cannot be loaded: {exc.__class__.__name__}"
        ) from None


def verify_bundle(folder: Path, witness_files: list[Path]) -> BundleCheck:
    """Check an exported bundle offline, against the witness files the auditor brings."""
    manifest = _manifest(folder)
    keys = _keys(folder)
    if manifest.get("instance") != keys.instance_id:
        raise AuditError("the bundle's manifest names another instance than its audit key")
    copies: list[WitnessCopy] = []
    for path in witness_files:
        try:
            text = witness_text(path.read_bytes())
        except OSError as exc:
            raise AuditError(f"cannot read the witness file {path}: {exc.strerror}") from None
        found = parse_lines(text, instance_id=keys.instance_id)
        if not found:
            raise AuditError(
                f"{path} holds no mailpki checkpoint line of this instance"
                + ("" if LINE_FORMAT in text else " (no checkpoint line at all)")
                + ": a witness that holds nothing cannot vouch for the bundle"
            )
        copies.append(WitnessCopy(path.name, str(path), True, "a copy you brought", tuple(found)))
    if (folder / KRS_COPY).is_file():
        found = parse_lines(
            _read_text(folder / KRS_COPY, "recovery service copy"), instance_id=keys.instance_id
        )
        copies.append(
            WitnessCopy(
                "recovery service (copy in the bundle)",
                str(folder / KRS_COPY),
                False,
                "it came with the bundle: bring your own copy with --witness to rely on it",
                tuple(found),
            )
        )
    engine = create_engine("sqlite://")
    try:
        Base.metadata.create_all(engine, tables=[
            AuditRecord.__table__, AuditHead.__table__, AuditCheckpoint.__table__,  # type: ignore[list-item]
        ])  # fmt: skip
        with Session(engine) as session:
            _load(session, folder, manifest)
            log = verify_log(session, keys.classic, keys.mldsa)
            pq_from = pq_required_from(session, keys)
            checked = tuple(
                (copy, tuple(check_copy(session, keys, copy, pq_from=pq_from))) for copy in copies
            )
    finally:
        engine.dispose()
    return BundleCheck(keys.instance_id, log, checked, _against_manifest(manifest, log))


def _against_manifest(manifest: dict[str, Any], log: VerifyReport) -> tuple[Problem, ...]:
    """The counts the export wrote down against what the files hold (a file cut short in
    transit, or edited without its manifest)."""
    found = []
    for key, held in (("records", log.records), ("checkpoints", log.checkpoints)):
        said = manifest.get(key)
        if said != held:
            found.append(
                Problem(
                    None,
                    "bundle-mismatch",
                    f"the manifest says {said!r} {key}, the bundle holds {held}: a file was cut "
                    "or edited after the export",
                )
            )
    return tuple(found)
