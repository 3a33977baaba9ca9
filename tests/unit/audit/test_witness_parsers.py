"""Parsers of what comes from outside the instance, tried with garbage: witness file lines,
saved checkpoint mails, submissions to the recovery service's witness, exported bundles.

Each must answer bad input with its own error (AuditError, or InputError on the
service) naming what is wrong, never another exception, and change nothing."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from mailpki.audit import AuditLog, genesis
from mailpki.audit.bundle import verify_bundle, write_bundle
from mailpki.audit.keys import AuditKeys
from mailpki.audit.witness import (
    LINE_FORMAT,
    MAX_LINE,
    SignedCheckpoint,
    parse_lines,
    witness_text,
)
from mailpki.errors import AuditError, InputError, RecoveryRefused
from mailpki.instance.audit_witnesses import _TAIL_BLOCK, _last_seq_in_file
from mailpki.recovery.witness import MAX_LINKS, CheckpointWitness, submission
from mailpki.store.db import Database
from mailpki.store.models import AuditCheckpoint, AuditRecord, Base, WitnessedCheckpoint

KEY = ec.generate_private_key(ec.SECP256R1())
PQ_KEY = mldsa.MLDSA65PrivateKey.generate()
KEYS = AuditKeys(KEY.public_key(), PQ_KEY.public_key())
WITNESS_KEY = ec.generate_private_key(ec.SECP256R1())
FIELDS = ("seq", "time", "event", "actor", "data", "prev_hash", "hash")

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=80),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


# -- a small real log ---------------------------------------------------------------


def _database(path: Path) -> Database:
    db = Database(f"sqlite:///{path}")
    Base.metadata.create_all(db.engine)
    with db.transaction() as session:
        genesis(session)
    return db


def _log() -> AuditLog:
    return AuditLog(signer=KEY, pq_signer=PQ_KEY, checkpoint_every=3)


def _fill(db: Database, n: int, start: int = 0) -> None:
    log = _log()
    with db.transaction() as session:
        for i in range(start, start + n):
            log.append(session, "config.changed", actor="cli:test", data={"n": i})
        log.checkpoint(session)


def _checkpoints(db: Database) -> list[SignedCheckpoint]:
    with db.session() as session:
        rows = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq)).all()
        return [SignedCheckpoint.of(r) for r in rows]


def _links(db: Database, after: int, upto: int) -> list[dict[str, Any]]:
    with db.session() as session:
        rows = session.execute(
            select(*(getattr(AuditRecord, f) for f in FIELDS))
            .where(AuditRecord.seq > after, AuditRecord.seq <= upto)
            .order_by(AuditRecord.seq)
        ).all()
    return [dict(zip(FIELDS, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def instance_db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    db = _database(tmp_path_factory.mktemp("instance") / "mailpki.db")
    _fill(db, 7)
    return db


@pytest.fixture(scope="module")
def line(instance_db: Database) -> str:
    return _checkpoints(instance_db)[-1].to_line(KEYS.instance_id)


# -- witness file lines ---------------------------------------------------------------


def _is_base64(value: Any) -> bool:
    try:
        return isinstance(value, str) and bool(base64.b64decode(value, validate=True))
    except ValueError:
        return False


def test_a_line_round_trips(instance_db: Database, line: str) -> None:
    newest = _checkpoints(instance_db)[-1]
    assert parse_lines(f"some syslog noise\n{line}\n\n") == [newest]
    assert parse_lines(line, instance_id="0" * 64) == []  # another instance's lines skipped


@settings(deadline=None)
@given(text=st.text(max_size=400))
def test_any_text_is_skipped_or_refused_with_a_line_number(text: str) -> None:
    try:
        found = parse_lines(text)
    except AuditError as exc:
        assert str(exc).startswith("line ")
    else:
        assert all(isinstance(c, SignedCheckpoint) for c in found)


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150
)
@given(cut=st.integers(min_value=1, max_value=10_000))
def test_a_truncated_line_is_refused_or_skipped(line: str, cut: int) -> None:
    cut = cut % len(line)
    part = line[:cut]
    if LINE_FORMAT in part:
        with pytest.raises(AuditError, match="line 3: a checkpoint line is not valid JSON"):
            parse_lines(f"\n\n{part}")
    else:
        assert parse_lines(part) == []


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300
)
@given(
    field=st.sampled_from(["instance", "seq", "hash", "time", "ecdsa", "mldsa", "format"]),
    value=JUNK,
)
def test_a_line_with_a_wrong_field_is_refused(line: str, field: str, value: Any) -> None:
    raw = json.loads(line)
    raw[field] = value
    if field == "mldsa" and value is None:
        return  # a checkpoint of an instance from before ML-DSA: valid
    if field == "format":
        raw["note"] = LINE_FORMAT  # still looks like a checkpoint line
    if field == "seq" and type(value) is int and 0 < value < 2**63:
        return  # another, valid seq
    if field == "time" and isinstance(value, str) and 0 < len(value) <= 40:
        return  # time is checked by the signature, not the parser
    if field in ("ecdsa", "mldsa") and _is_base64(value):
        return  # a wrong signature: the signature check's finding, not the parser's
    with pytest.raises(AuditError, match="^line 1: "):
        parse_lines(json.dumps(raw))


def test_huge_and_deeply_nested_lines_are_refused(line: str) -> None:
    with pytest.raises(AuditError, match="too long"):
        parse_lines(line[:-1] + ', "pad": "' + "x" * MAX_LINE + '"}')
    nested = "{" + f'"format": "{LINE_FORMAT}", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(AuditError):
        parse_lines(nested[: MAX_LINE - 1])
    with pytest.raises(AuditError, match="'seq' must be a positive whole number"):
        parse_lines(line.replace('"seq":', '"seq":1' + "0" * 4000 + ',"x":'))
    with pytest.raises(AuditError, match="not valid base64"):
        raw = json.loads(line)
        raw["ecdsa"] = "not base64!"
        parse_lines(json.dumps(raw))


# -- saved checkpoint mails -----------------------------------------------------------


@pytest.mark.parametrize("encoding", ["quoted-printable", "base64", "7bit"])
def test_a_saved_mail_is_decoded_whatever_its_transfer_encoding(
    instance_db: Database, line: str, encoding: str
) -> None:
    mail = EmailMessage()
    mail["From"] = "pki@example.com"
    mail["To"] = "auditor@example.com"
    mail["Subject"] = "audit checkpoint"
    body = f"Keep this mail.\n\n{line}\n"
    if encoding == "7bit":  # a long line kept whole (some transports do)
        mail.set_payload(body)
        mail["Content-Type"] = "text/plain; charset=utf-8"
    else:
        mail.set_content(body, cte=encoding)
    raw = mail.as_bytes()
    if encoding == "quoted-printable":
        assert line not in raw.decode()  # wrapped: the raw file alone would miss it
    assert parse_lines(witness_text(raw)) == [_checkpoints(instance_db)[-1]]


def test_a_mail_with_an_unknown_charset_or_a_binary_part_is_read_safely(line: str) -> None:
    mail = EmailMessage()
    mail["Subject"] = "audit checkpoint"
    mail.set_content(f"{line}\n")
    mail.add_attachment(b"\xff\x00\xfe", maintype="application", subtype="octet-stream")
    assert len(parse_lines(witness_text(mail.as_bytes()))) == 1
    odd = b"Subject: x\nContent-Type: text/plain; charset=x-unknown-9\n\n" + line.encode()
    assert len(parse_lines(witness_text(odd))) == 1


@settings(deadline=None)
@given(data=st.binary(max_size=2000))
def test_any_bytes_give_text_and_no_crash(data: bytes) -> None:
    text = witness_text(data)
    assert isinstance(text, str)
    with contextlib.suppress(AuditError):
        parse_lines(text)


@settings(deadline=None)
@given(
    headers=st.lists(
        st.sampled_from(
            [
                "Subject: x",
                "X-Y: z",
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: base64",
                "Content-Type: multipart/mixed; boundary=b",
                "--b",
                "MIME-Version: 1.0",
            ]
        ),
        max_size=6,
    ),
    body=st.binary(max_size=300),
)
def test_garbage_mails_give_text_and_no_crash(headers: list[str], body: bytes) -> None:
    data = ("\n".join(["Subject: audit checkpoint", *headers]) + "\n\n").encode() + body
    assert isinstance(witness_text(data), str)


# -- submissions to the recovery service's witness ------------------------------------


@pytest.fixture
def witness(tmp_path: Path) -> CheckpointWitness:
    db = _database(tmp_path / "krs.db")
    public = WITNESS_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return CheckpointWitness(
        db=db,
        audit=lambda: AuditLog(signer=WITNESS_KEY, checkpoint_every=100),
        signer=lambda: WITNESS_KEY,
        countersign_key_pem=public,
        witness_id="f" * 64,
    )


def _held(witness: CheckpointWitness) -> int:
    with witness._db.session() as session:
        return int(session.scalar(select(func.count()).select_from(WitnessedCheckpoint)) or 0)


def _first_submission(instance_db: Database) -> dict[str, Any]:
    first = _checkpoints(instance_db)[0]
    return json.loads(submission(KEYS, first, []))


def test_the_witness_keeps_a_chain_and_refuses_a_fork(
    witness: CheckpointWitness, instance_db: Database
) -> None:
    cps = _checkpoints(instance_db)
    witness.accept(submission(KEYS, cps[0], []))
    witness.accept(submission(KEYS, cps[1], _links(instance_db, cps[0].seq, cps[1].seq)))
    # Handed again (two commands sealing at once): the same receipt, nothing new kept.
    witness.accept(submission(KEYS, cps[0], []))
    assert _held(witness) == 2
    forged = _links(instance_db, cps[1].seq, cps[2].seq)
    forged[0]["actor"] = "cli:nobody"
    with pytest.raises(RecoveryRefused, match="does not extend"):
        witness.accept(submission(KEYS, cps[2], forged))
    assert _held(witness) == 2


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200
)
@given(data=st.binary(max_size=600))
def test_any_bytes_are_refused_as_input_and_nothing_is_kept(
    witness: CheckpointWitness, data: bytes
) -> None:
    with pytest.raises(InputError):
        witness.accept(data)
    assert _held(witness) == 0


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200
)
@given(
    field=st.sampled_from(["format", "audit_key", "mldsa_key", "checkpoint", "links", "extra"]),
    value=JUNK,
)
def test_a_submission_with_a_wrong_field_is_refused(
    witness: CheckpointWitness, instance_db: Database, field: str, value: Any
) -> None:
    body = _first_submission(instance_db)
    body[field] = value
    if field == "links" and value == []:
        return
    with pytest.raises((InputError, RecoveryRefused)):
        witness.accept(json.dumps(body).encode())
    assert _held(witness) == 0


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200
)
@given(field=st.sampled_from(FIELDS), value=JUNK, cut=st.integers(min_value=0, max_value=3))
def test_links_with_wrong_types_or_values_are_refused(
    witness: CheckpointWitness, instance_db: Database, field: str, value: Any, cut: int
) -> None:
    cps = _checkpoints(instance_db)
    if _held(witness) == 0:
        witness.accept(submission(KEYS, cps[0], []))
    links = _links(instance_db, cps[0].seq, cps[1].seq)
    links[cut % len(links)][field] = value
    if links == _links(instance_db, cps[0].seq, cps[1].seq):
        return  # the junk happened to be the right value
    with pytest.raises((InputError, RecoveryRefused)):
        witness.accept(submission(KEYS, cps[1], links))
    assert _held(witness) == 1


def test_huge_submissions_are_refused(witness: CheckpointWitness, instance_db: Database) -> None:
    with pytest.raises(InputError, match="too large"):
        witness.accept(b"{" + b" " * (17 * 1024 * 1024) + b"}")
    body = _first_submission(instance_db)
    body["links"] = [dict.fromkeys(FIELDS, "x")] * (MAX_LINKS + 1)
    with pytest.raises(InputError, match="at most"):
        witness.accept(json.dumps(body).encode())
    body = _first_submission(instance_db)
    body["checkpoint"]["seq"] = 10**400
    with pytest.raises(InputError, match="'seq' must be a positive whole number"):
        witness.accept(json.dumps(body).encode())
    deep = b'{"format": "mailpki-witness/1", "links": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(InputError, match="not JSON"):
        witness.accept(deep)
    assert _held(witness) == 0


def test_a_submission_signed_by_another_key_is_refused(
    witness: CheckpointWitness, instance_db: Database
) -> None:
    body = _first_submission(instance_db)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    body["audit_key"] = other.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(InputError, match="another instance"):
        witness.accept(json.dumps(body).encode())
    body = _first_submission(instance_db)
    body["checkpoint"]["ecdsa"] = base64.b64encode(b"\x30\x00").decode()
    with pytest.raises(RecoveryRefused):
        witness.accept(json.dumps(body).encode())
    assert _held(witness) == 0


# -- bundle files ---------------------------------------------------------------------


def _records(db: Database) -> Iterator[dict[str, Any]]:
    yield from _links(db, 0, 10**9)


@pytest.fixture
def bundle(tmp_path: Path, instance_db: Database) -> Path:
    out = tmp_path / "bundle"
    with instance_db.session() as session:
        head = session.execute(select(func.max(AuditRecord.seq))).scalar_one()
        head_hash = session.scalar(select(AuditRecord.hash).where(AuditRecord.seq == head))
    write_bundle(
        out,
        keys=KEYS,
        head=(int(head), str(head_hash)),
        records=_records(instance_db),
        checkpoints=_checkpoints(instance_db),
        krs_copy=None,
        exported_at="2026-01-01T00:00:00+00:00",
    )
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_bundle_verifies(bundle: Path) -> None:
    assert verify_bundle(bundle, []).ok


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150
)
@given(
    name=st.sampled_from(["records.jsonl", "checkpoints.jsonl", "manifest.json",
                          "audit-key.pub.pem", "audit-key-mldsa.pub.pem"]),
    data=st.one_of(st.binary(max_size=400), st.just(b"\xff\xfe\x00bad"), st.just(b"")),
)  # fmt: skip
def test_a_bundle_file_replaced_by_garbage_is_refused(bundle: Path, name: str, data: bytes) -> None:
    original = (bundle / name).read_bytes()
    (bundle / name).write_bytes(data)
    try:
        before = _digest(bundle)
        try:
            check = verify_bundle(bundle, [])
        except AuditError as exc:
            assert str(exc)
        else:
            assert not check.ok
        assert _digest(bundle) == before  # verification changes nothing
    finally:
        (bundle / name).write_bytes(original)


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150
)
@given(
    name=st.sampled_from(["records.jsonl", "checkpoints.jsonl", "manifest.json"]),
    cut=st.integers(min_value=0, max_value=100_000),
)
def test_a_truncated_bundle_file_is_refused(bundle: Path, name: str, cut: int) -> None:
    original = (bundle / name).read_bytes()
    cut = cut % len(original)
    if original[:cut].rstrip() == original.rstrip():
        return  # only the final newline cut: the same content
    (bundle / name).write_bytes(original[:cut])
    try:
        try:
            check = verify_bundle(bundle, [])
        except AuditError:
            pass
        else:
            assert not check.ok
    finally:
        (bundle / name).write_bytes(original)


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200
)
@given(field=st.sampled_from(FIELDS), value=JUNK, which=st.integers(min_value=0, max_value=20))
def test_a_record_with_a_wrong_field_is_refused(
    bundle: Path, field: str, value: Any, which: int
) -> None:
    original = (bundle / "records.jsonl").read_text()
    lines = original.splitlines()
    record = json.loads(lines[which % len(lines)])
    if record[field] == value:
        return
    record[field] = value
    lines[which % len(lines)] = json.dumps(record)
    (bundle / "records.jsonl").write_text("\n".join(lines) + "\n")
    try:
        try:
            check = verify_bundle(bundle, [])
        except AuditError as exc:
            assert "records.jsonl line" in str(exc) or "cannot be loaded" in str(exc)
        else:
            assert not check.ok
    finally:
        (bundle / "records.jsonl").write_text(original)


@pytest.mark.parametrize(
    "head",
    [{"seq": "7", "hash": "0" * 64}, {"seq": 10**30, "hash": "0" * 64}, {"seq": 1}, [], "x",
     {"seq": True, "hash": "0" * 64}],
)  # fmt: skip
def test_a_manifest_with_a_wrong_head_is_refused(bundle: Path, head: Any) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["head"] = head
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AuditError, match="'head' must be"):
        verify_bundle(bundle, [])


def test_witness_files_that_hold_nothing_are_refused(bundle: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("")
    with pytest.raises(AuditError, match="holds no mailpki checkpoint line of this instance"):
        verify_bundle(bundle, [empty])
    other = tmp_path / "other.log"
    line = (bundle / "checkpoints.jsonl").read_text().splitlines()[-1]
    other.write_text(line.replace(KEYS.instance_id, "0" * 64) + "\n")
    with pytest.raises(AuditError, match="of this instance: a witness that holds nothing"):
        verify_bundle(bundle, [other])
    with pytest.raises(AuditError, match="cannot read the witness file"):
        verify_bundle(bundle, [tmp_path / "missing.log"])


def test_the_last_line_of_an_instance_is_found_from_the_end_of_a_long_file(
    instance_db: Database,
) -> None:
    """A witness file shared by instances, longer than one read block, with syslog noise
    and a cut first line: the hand-over reads it backwards for its own last checkpoint."""
    mine = _checkpoints(instance_db)
    other = [line.replace(KEYS.instance_id, "0" * 64) for line in _lines(mine)]
    body = "garbage}\n" + "\n".join(_lines(mine[:2]) + other * 40 + ["noise"] * 5000) + "\n"
    handle = io.BytesIO(body.encode())
    assert len(body) > 3 * _TAIL_BLOCK
    assert _last_seq_in_file(handle, KEYS.instance_id) == mine[1].seq
    assert _last_seq_in_file(io.BytesIO(b""), KEYS.instance_id) == 0
    assert (
        _last_seq_in_file(io.BytesIO(b"\n".join(o.encode() for o in other)), KEYS.instance_id) == 0
    )


def _lines(checkpoints: list[SignedCheckpoint]) -> list[str]:
    return [c.to_line(KEYS.instance_id) for c in checkpoints]
