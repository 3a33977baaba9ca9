"""The audit log: chain, checkpoints, refusals, transactions, and tamper detection."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import string
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from mailpki.audit import AuditLog, Problem, VerifyReport, genesis, verify_log
from mailpki.audit.log import ZERO_HASH, record_hash
from mailpki.errors import AuditError, AuditIntegrityError, AuditUnavailable
from mailpki.store.models import (
    AuditCheckpoint,
    AuditRecord,
    Base,
    SerialReservation,
)

KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = KEY.public_key()


# -- helpers -----------------------------------------------------------------------


def make_engine() -> Engine:
    """A fresh in-memory database shared by every session of the test."""
    engine = create_engine(
        "sqlite+pysqlite://",
        poolclass=StaticPool,
        connect_args={"check_same_thread": False},
    )
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        genesis(session)
    return engine


def fill(engine: Engine, n: int, log: AuditLog | None = None, start: int = 0) -> AuditLog:
    log = log or AuditLog(signer=KEY, checkpoint_every=5)
    with Session(engine) as session, session.begin():
        for i in range(start, start + n):
            log.append(
                session, "cert.issued", actor="ra@example.org", data={"serial": f"{i:x}", "n": i}
            )
    return log


def sql(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def verify(engine: Engine, key: Any = PUBLIC) -> VerifyReport:
    with Session(engine) as session:
        return verify_log(session, key)


def found(report: VerifyReport) -> set[tuple[str, int | None]]:
    return {(p.kind, p.seq) for p in report.problems}


def rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(text("SELECT * FROM audit_records ORDER BY seq"))
        return [dict(r._mapping) for r in result]


def head(engine: Engine) -> tuple[int, str]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
        return int(row[0]), str(row[1])


def rechain(engine: Engine, from_seq: int) -> None:
    """What a careful attacker does after editing a record: recompute every later hash."""
    records = rows(engine)
    prev = ZERO_HASH
    with engine.begin() as conn:
        for rec in records:
            if rec["seq"] >= from_seq:
                new = record_hash(
                    prev, rec["seq"], rec["time"], rec["event"], rec["actor"],
                    json.loads(rec["data"]),
                )  # fmt: skip
                conn.execute(
                    text("UPDATE audit_records SET prev_hash = :p, hash = :h WHERE seq = :s"),
                    {"p": prev, "h": new, "s": rec["seq"]},
                )
                rec["hash"] = new
            prev = rec["hash"]
        conn.execute(
            text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"),
            {"s": records[-1]["seq"], "h": prev},
        )


def forge(seq: int, prev_hash: str, data: str = '{"forged":true}') -> dict[str, Any]:
    """A self-consistent record, as someone without the audit key can make one."""
    time = "2030-01-01T00:00:00.000000+00:00"
    digest = record_hash(prev_hash, seq, time, "cert.revoked", "mallory", json.loads(data))
    return {
        "seq": seq, "time": time, "event": "cert.revoked", "actor": "mallory",
        "data": data, "prev_hash": prev_hash, "hash": digest,
    }  # fmt: skip


def insert(engine: Engine, record: dict[str, Any]) -> None:
    sql(
        engine,
        "INSERT INTO audit_records (seq, time, event, actor, data, prev_hash, hash) "
        "VALUES (:seq, :time, :event, :actor, :data, :prev_hash, :hash)",
        **record,
    )


def swap(engine: Engine, a: int, b: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_records SET seq = -999 WHERE seq = :a"), {"a": a})
        conn.execute(text("UPDATE audit_records SET seq = :a WHERE seq = :b"), {"a": a, "b": b})
        conn.execute(text("UPDATE audit_records SET seq = :b WHERE seq = -999"), {"b": b})


def shift(engine: Engine, from_seq: int, by: int) -> None:
    """Renumber records from_seq.. by `by` (through negatives: seq is the primary key)."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_records SET seq = -(seq + :by) WHERE seq >= :f"),
            {"by": by, "f": from_seq},
        )
        conn.execute(text("UPDATE audit_records SET seq = -seq WHERE seq < 0"))


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = make_engine()
    yield engine
    engine.dispose()


# -- writing -------------------------------------------------------------------------


def test_append_all_chains_and_seals_as_if_appended_one_by_one(engine: Engine) -> None:
    log = fill(engine, 3)  # checkpoint every 5: the batch crosses seq 5 and 10
    with Session(engine) as session, session.begin():
        written = log.append_all(
            session,
            [("key.delivered", {"serial": f"{i:x}", "n": i}) for i in range(3, 12)],
            actor="ra@example.org",
        )
        seqs = [r.seq for r in written]
    assert seqs == list(range(4, 13))
    records = rows(engine)
    prev = ZERO_HASH
    for rec in records:
        assert rec["prev_hash"] == prev
        prev = rec["hash"]
    assert head(engine) == (12, prev)
    with Session(engine) as session:
        assert session.scalars(select(AuditCheckpoint.seq)).all() == [5, 10]
    assert verify(engine).ok


def test_append_all_refuses_a_bad_event_before_writing_any(engine: Engine) -> None:
    log = fill(engine, 2)
    with Session(engine) as session, session.begin(), pytest.raises(AuditError):
        log.append_all(
            session, [("key.delivered", {}), ("Not An Event", {})], actor="ra@example.org"
        )
    assert head(engine)[0] == 2


def test_a_database_that_does_not_answer_is_an_outage_not_a_refusal(tmp_path: Any) -> None:
    """A connection that cannot be made is AuditUnavailable (the portal answers 503, try
    again), still an AuditError to every caller that guards an action with the log."""
    gone = create_engine(f"sqlite+pysqlite:///{tmp_path}/no-such-folder/audit.db")
    with Session(gone) as session, pytest.raises(AuditUnavailable) as raised:
        AuditLog(signer=KEY).append(session, "cert.issued", actor="ra@example.org", data={})
    assert isinstance(raised.value, AuditError)
    assert "could not write the audit record for 'cert.issued'" in str(raised.value)


def test_a_refused_write_is_not_an_outage(engine: Engine) -> None:
    sql(engine, "DROP TABLE audit_records")
    with Session(engine) as session, pytest.raises(AuditError) as raised:
        AuditLog(signer=KEY).append(session, "cert.issued", actor="ra@example.org", data={})
    assert not isinstance(raised.value, AuditUnavailable)


def test_append_builds_a_linked_chain(engine: Engine) -> None:
    fill(engine, 10)
    records = rows(engine)
    assert [r["seq"] for r in records] == list(range(1, 11))
    prev = ZERO_HASH
    for rec in records:
        assert rec["prev_hash"] == prev
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", rec["time"])
        assert json.loads(rec["data"])["n"] == rec["seq"] - 1
        prev = rec["hash"]
    assert head(engine) == (10, prev)
    assert verify(engine).ok


def test_append_returns_the_record_and_stores_canonical_json(engine: Engine) -> None:
    log = AuditLog(signer=None)
    with Session(engine) as session, session.begin():
        rec = log.append(session, "key.escrowed", actor="km", data={"b": [1, 2.5, None], "a": "é"})
        assert rec.seq == 1 and rec.event == "key.escrowed"
    assert rows(engine)[0]["data"] == '{"a":"é","b":[1,2.5,null]}'


def test_clock_is_used_and_converted_to_utc(engine: Engine) -> None:
    from datetime import timedelta, timezone

    paris = timezone(timedelta(hours=1))
    log = AuditLog(signer=None, clock=lambda: datetime(2030, 5, 1, 13, 0, 0, 5, tzinfo=paris))
    with Session(engine) as session, session.begin():
        log.append(session, "ca.initialised", actor="admin", data={})
    assert rows(engine)[0]["time"] == "2030-05-01T12:00:00.000005+00:00"


def test_naive_clock_is_refused(engine: Engine) -> None:
    log = AuditLog(signer=None, clock=lambda: datetime(2030, 1, 1))
    with Session(engine) as session, session.begin(), pytest.raises(AuditError, match="naive"):
        log.append(session, "ca.initialised", actor="admin", data={})


def test_checkpoint_every_n_records(engine: Engine) -> None:
    fill(engine, 12, AuditLog(signer=KEY, checkpoint_every=5))
    with Session(engine) as session:
        seqs = session.scalars(select(AuditCheckpoint.seq).order_by(AuditCheckpoint.seq)).all()
    assert seqs == [5, 10]
    report = verify(engine)
    assert report.ok
    assert (report.records, report.checkpoints, report.last_sealed_seq) == (12, 2, 10)


def test_manual_checkpoint_seals_the_head_once(engine: Engine) -> None:
    log = AuditLog(signer=KEY, checkpoint_every=100)
    with Session(engine) as session, session.begin():
        assert log.checkpoint(session) is None  # empty log
    fill(engine, 7, log)
    with Session(engine) as session, session.begin():
        cp = log.checkpoint(session)
        assert cp is not None and cp.seq == 7
        assert log.checkpoint(session) is None  # already sealed at head
    report = verify(engine)
    assert report.ok and report.last_sealed_seq == 7


def test_manual_checkpoint_needs_a_signer(engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(AuditError, match="no audit signing key"):
        AuditLog(signer=None).checkpoint(session)


def test_checkpoint_refuses_to_seal_a_tampered_head(engine: Engine) -> None:
    log = fill(engine, 3, AuditLog(signer=KEY, checkpoint_every=100))
    sql(engine, "UPDATE audit_head SET hash = :h", h="1" * 64)
    with Session(engine) as session, pytest.raises(AuditIntegrityError):
        log.checkpoint(session)


def test_rsa_signer(engine: Engine) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fill(engine, 4, AuditLog(signer=key, checkpoint_every=2))
    assert verify(engine, key.public_key()).ok
    # The EC key did not sign these: every checkpoint is reported.
    assert found(verify(engine, PUBLIC)) == {("bad-checkpoint", 2), ("bad-checkpoint", 4)}


class TokenKey(ec.EllipticCurvePrivateKey):
    """Stands for a PKCS#11 key: only sign() and public_key() work."""

    def __init__(self, inner: ec.EllipticCurvePrivateKey, fail: bool = False) -> None:
        self._inner = inner
        self._fail = fail

    def sign(self, data: Any, signature_algorithm: Any) -> bytes:
        if self._fail:
            raise RuntimeError("CKR_DEVICE_REMOVED")
        return self._inner.sign(data, signature_algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.public_key()

    def _no(self, *_: Any, **__: Any) -> Any:
        raise AssertionError("only sign() and public_key() may be called on a token key")

    exchange = private_numbers = private_bytes = __copy__ = __deepcopy__ = _no

    @property
    def curve(self) -> ec.EllipticCurve:
        raise AssertionError("curve must not be called")

    @property
    def key_size(self) -> int:
        raise AssertionError("key_size must not be called")


def test_token_backed_signer_is_only_asked_to_sign(engine: Engine) -> None:
    fill(engine, 4, AuditLog(signer=TokenKey(KEY), checkpoint_every=2))
    report = verify(engine)
    assert report.ok and report.checkpoints == 2


def test_a_failing_token_fails_the_append_and_nothing_persists(engine: Engine) -> None:
    log = AuditLog(signer=TokenKey(KEY, fail=True), checkpoint_every=1)
    with (
        pytest.raises(AuditError, match="could not sign"),
        Session(engine) as session,
        session.begin(),
    ):
        session.add(SerialReservation(serial="1a", issuer="issuing", reserved_at=datetime.now(UTC)))
        log.append(session, "cert.issued", actor="ra", data={"serial": "1a"})
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(SerialReservation)) == 0
        assert session.scalar(select(func.count()).select_from(AuditRecord)) == 0
    assert head(engine) == (0, ZERO_HASH)


def test_sessions_that_keep_stale_objects_still_chain(engine: Engine) -> None:
    log = AuditLog(signer=KEY, checkpoint_every=3)
    a = Session(engine, expire_on_commit=False)
    b = Session(engine, expire_on_commit=False)
    for i in range(6):
        session = a if i % 2 == 0 else b
        with session.begin():
            log.append(session, "cert.issued", actor="ra", data={"i": i})
    a.close()
    b.close()
    assert verify(engine).ok
    assert head(engine)[0] == 6


# -- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"password": "x"},
        {"Passphrase": "x"},
        {"user_pin": "1234"},
        {"PIN": "1234"},
        {"clientSecret": "x"},
        {"private_key": "-----BEGIN"},
        {"privateKey": "x"},
        {"ca-private-key": "x"},
        {"outer": {"db_password": "x"}},
        {"list": [{"ok": 1}, {"pin": "1"}]},
        {"secrets": ["a"]},
    ],
)
def test_secret_looking_keys_are_refused(engine: Engine, data: dict[str, Any]) -> None:
    log = AuditLog(signer=None)
    with Session(engine) as session, pytest.raises(AuditError, match="secret"):
        log.append(session, "user.enrolled", actor="portal", data=data)
    assert head(engine) == (0, ZERO_HASH)


def test_words_that_merely_contain_pin_are_allowed(engine: Engine) -> None:
    log = AuditLog(signer=None)
    with Session(engine) as session, session.begin():
        log.append(
            session, "user.enrolled", actor="portal",
            data={"shipping": 1, "mapping": 2, "pinned": True, "keyUsage": "x"},
        )  # fmt: skip
    assert verify(engine).ok


@pytest.mark.parametrize(
    "event",
    ["issued", "Cert.issued", "cert.", ".cert", "cert..issued", "cert.issued!", "1cert.x",
     "cert issued", "", "cert.Issued", "c." + "x" * 70],
)  # fmt: skip
def test_bad_event_names_are_refused(engine: Engine, event: str) -> None:
    with Session(engine) as session, pytest.raises(AuditError, match="event name"):
        AuditLog(signer=None).append(session, event, actor="ra", data={})


@pytest.mark.parametrize(
    "data",
    [
        {"when": datetime.now(UTC)},
        {"der": b"\x30\x00"},
        {"set": {1, 2}},
        {"nan": float("nan")},
        {"inf": [float("inf")]},
        {1: "int key"},
        {"obj": object()},
        {"surrogate": "\ud800"},
    ],
)
def test_data_that_is_not_plain_json_is_refused(engine: Engine, data: dict[Any, Any]) -> None:
    with Session(engine) as session, pytest.raises(AuditError):
        AuditLog(signer=None).append(session, "cert.issued", actor="ra", data=data)


@pytest.mark.parametrize("actor", ["", "   ", "x" * 321, "\udc80"])
def test_bad_actors_are_refused(engine: Engine, actor: str) -> None:
    with Session(engine) as session, pytest.raises(AuditError, match="actor"):
        AuditLog(signer=None).append(session, "cert.issued", actor=actor, data={})


@pytest.mark.parametrize("every", [0, -1])
def test_checkpoint_every_must_be_positive(every: int) -> None:
    with pytest.raises(AuditError):
        AuditLog(signer=None, checkpoint_every=every)


def test_append_without_genesis_is_refused() -> None:
    engine = create_engine("sqlite+pysqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session, pytest.raises(AuditError, match="genesis"):
        AuditLog(signer=None).append(session, "cert.issued", actor="ra", data={})


def test_genesis_is_idempotent_and_refuses_a_headless_log(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        genesis(session)
    assert head(engine) == (0, ZERO_HASH)
    fill(engine, 2)
    sql(engine, "DELETE FROM audit_head")
    with Session(engine) as session, pytest.raises(AuditIntegrityError):
        genesis(session)


# -- transactions ------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_rolled_back_append_leaves_no_record_and_the_head_unchanged(engine: Engine) -> None:
    fill(engine, 3)
    before = head(engine)
    with pytest.raises(Boom), Session(engine) as session, session.begin():
        AuditLog(signer=KEY, checkpoint_every=1).append(session, "cert.issued", actor="ra", data={})
        raise Boom
    assert head(engine) == before
    assert len(rows(engine)) == 3
    assert verify(engine).ok


def test_an_action_that_fails_after_its_audit_record_persists_nothing(engine: Engine) -> None:
    with pytest.raises(Boom), Session(engine) as session, session.begin():
        session.add(SerialReservation(serial="2b", issuer="issuing", reserved_at=datetime.now(UTC)))
        AuditLog(signer=None).append(session, "serial.reserved", actor="ca", data={"s": "2b"})
        raise Boom  # e.g. signing failed
    assert rows(engine) == []
    assert head(engine) == (0, ZERO_HASH)


def test_a_failed_audit_append_stops_the_action_from_committing(engine: Engine) -> None:
    with pytest.raises(AuditError), Session(engine) as session, session.begin():
        session.add(SerialReservation(serial="3c", issuer="issuing", reserved_at=datetime.now(UTC)))
        AuditLog(signer=None).append(session, "cert.issued", actor="ra", data={"pin": "1"})
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(SerialReservation)) == 0


def test_a_database_error_becomes_an_audit_error(engine: Engine) -> None:
    fill(engine, 2)
    sql(engine, "UPDATE audit_head SET seq = 1")  # next seq (2) collides with a record
    with (
        pytest.raises(AuditError, match="could not write"),
        Session(engine) as session,
        session.begin(),
    ):
        AuditLog(signer=None).append(session, "cert.issued", actor="ra", data={})


# -- tamper detection --------------------------------------------------------------------


@pytest.fixture
def log20(engine: Engine) -> Engine:
    """20 records, checkpoints at 5, 10, 15, 20."""
    fill(engine, 20)
    assert verify(engine).ok
    return engine


def test_modified_data_is_named(log20: Engine) -> None:
    sql(log20, "UPDATE audit_records SET data = :d WHERE seq = 7", d='{"serial":"ff","n":6}')
    report = verify(log20)
    assert not report.ok
    assert found(report) == {("modified", 7)}
    assert report.problems[0].message == (
        "record 7 was modified: its content no longer matches its hash"
    )


@pytest.mark.parametrize("column", ["time", "event", "actor", "prev_hash", "hash"])
def test_any_modified_column_is_named(log20: Engine, column: str) -> None:
    value = {"prev_hash": "f" * 64, "hash": "e" * 64}.get(column, "tampered.value")
    sql(log20, f"UPDATE audit_records SET {column} = :v WHERE seq = 7", v=value)
    assert ("modified", 7) in found(verify(log20))


def test_whitespace_in_stored_json_counts_as_modification(log20: Engine) -> None:
    data = rows(log20)[6]["data"]
    sql(log20, "UPDATE audit_records SET data = :d WHERE seq = 7", d=data.replace(",", ", "))
    assert found(verify(log20)) == {("modified", 7)}


def test_modified_record_with_recomputed_hash_is_named(log20: Engine) -> None:
    rec = rows(log20)[6]
    data = {"serial": "ff", "n": 6}
    new = record_hash(rec["prev_hash"], 7, rec["time"], rec["event"], rec["actor"], data)
    sql(
        log20, "UPDATE audit_records SET data = :d, hash = :h WHERE seq = 7",
        d=json.dumps(data, separators=(",", ":"), sort_keys=True), h=new,
    )  # fmt: skip
    report = verify(log20)
    assert found(report) == {("modified", 7)}
    assert "hash recomputed" in report.problems[0].message


def test_deleted_record_is_named(log20: Engine) -> None:
    sql(log20, "DELETE FROM audit_records WHERE seq = 7")
    report = verify(log20)
    assert found(report) == {("deleted", 7)}
    assert report.records == 19


def test_deleted_range_is_one_problem(log20: Engine) -> None:
    sql(log20, "DELETE FROM audit_records WHERE seq BETWEEN 6 AND 9")
    report = verify(log20)
    assert found(report) == {("deleted", 6)}
    assert "records 6..9 were deleted" in report.problems[0].message


def test_deleted_first_record_is_named(log20: Engine) -> None:
    sql(log20, "DELETE FROM audit_records WHERE seq = 1")
    assert found(verify(log20)) == {("deleted", 1)}


def test_forged_record_past_the_head_is_inserted(log20: Engine) -> None:
    insert(log20, forge(21, head(log20)[1]))
    report = verify(log20)
    assert found(report) == {("inserted", 21)}
    assert "beyond the head" in report.problems[0].message


def test_forged_record_far_past_the_head_is_inserted_not_a_deletion(log20: Engine) -> None:
    insert(log20, forge(30, "a" * 64))
    assert found(verify(log20)) == {("inserted", 30)}


def test_forged_record_before_the_start_is_inserted(log20: Engine) -> None:
    insert(log20, forge(0, ZERO_HASH))
    assert found(verify(log20)) == {("inserted", 0)}


def test_forged_fork_that_links_to_an_old_record_is_inserted(log20: Engine) -> None:
    # Replace the last record by one that follows record 12 (a fork), head updated.
    sql(log20, "DELETE FROM audit_records WHERE seq = 20")
    sql(log20, "DELETE FROM audit_checkpoints WHERE seq = 20")
    forged = forge(20, rows(log20)[11]["hash"])
    insert(log20, forged)
    sql(log20, "UPDATE audit_head SET hash = :h", h=forged["hash"])
    report = verify(log20)
    assert ("inserted", 20) in found(report)
    assert "follows record 12, not record 19" in " ".join(p.message for p in report.problems)


def test_record_inserted_in_the_middle_with_renumbering(log20: Engine) -> None:
    shift(log20, 5, 1)
    forged = forge(5, rows(log20)[3]["hash"])
    insert(log20, forged)
    sql(log20, "UPDATE audit_head SET seq = 21")
    report = verify(log20)
    assert {("inserted", 5), ("reordered", 6)} <= found(report)
    assert "records 6..21 are out of place: they are really records 5..20" in " ".join(
        p.message for p in report.problems
    )


def test_swapped_records_are_reordered(log20: Engine) -> None:
    swap(log20, 6, 9)
    report = verify(log20)
    assert found(report) == {("reordered", 6), ("reordered", 9)}
    assert any(
        "record 6 is out of place: it is really record 9" in p.message for p in report.problems
    )


def test_adjacent_swap_is_reordered(log20: Engine) -> None:
    swap(log20, 6, 7)
    assert found(verify(log20)) == {("reordered", 6), ("reordered", 7)}


def test_deletion_hidden_by_renumbering_is_named(log20: Engine) -> None:
    sql(log20, "DELETE FROM audit_records WHERE seq = 7")
    shift(log20, 8, -1)
    report = verify(log20)
    assert {("deleted", 7), ("reordered", 7), ("truncated", 20)} <= found(report)


def test_truncated_tail_is_named(log20: Engine) -> None:
    sql(log20, "DELETE FROM audit_records WHERE seq >= 18")
    report = verify(log20)
    assert ("truncated", 18) in found(report)
    assert "records 18..20 are missing from the end" in " ".join(p.message for p in report.problems)


def test_truncation_with_head_rolled_back_is_caught_by_a_checkpoint(log20: Engine) -> None:
    sql(log20, "DELETE FROM audit_records WHERE seq >= 18")
    sql(log20, "UPDATE audit_head SET seq = 17, hash = :h", h=rows(log20)[-1]["hash"])
    report = verify(log20)
    assert found(report) == {("truncated", 18)}
    assert "checkpoint 20" in report.problems[0].message


def test_truncation_after_the_last_checkpoint_is_not_detectable(engine: Engine) -> None:
    """Documented limit: an unsealed tail can be cut if the head is rolled back too."""
    fill(engine, 23)
    sql(engine, "DELETE FROM audit_records WHERE seq >= 21")
    sql(engine, "UPDATE audit_head SET seq = 20, hash = :h", h=rows(engine)[-1]["hash"])
    assert verify(engine).ok


def test_modified_checkpoint_signature_is_named(log20: Engine) -> None:
    with log20.begin() as conn:
        sig = conn.execute(text("SELECT signature FROM audit_checkpoints WHERE seq = 10")).scalar()
        assert isinstance(sig, bytes)
        forged = sig[:-1] + bytes([sig[-1] ^ 1])
        conn.execute(
            text("UPDATE audit_checkpoints SET signature = :s WHERE seq = 10"), {"s": forged}
        )
    report = verify(log20)
    assert found(report) == {("bad-checkpoint", 10)}
    assert report.last_sealed_seq == 20


def test_checkpoint_with_altered_hash_is_named(log20: Engine) -> None:
    sql(log20, "UPDATE audit_checkpoints SET hash = :h WHERE seq = 15", h="c" * 64)
    assert found(verify(log20)) == {("bad-checkpoint", 15)}


def test_rewrite_with_recomputed_chain_is_caught_by_the_checkpoint(log20: Engine) -> None:
    sql(log20, "UPDATE audit_records SET data = :d WHERE seq = 3", d='{"n":2,"serial":"ff"}')
    rechain(log20, 3)
    report = verify(log20)
    # The chain itself is perfect again; only the signed checkpoints disagree.
    assert found(report) == {("bad-checkpoint", s) for s in (5, 10, 15, 20)}
    assert report.last_sealed_seq == 0


def test_rewrite_after_the_last_checkpoint_is_not_detectable(engine: Engine) -> None:
    """Documented limit: the unsealed tail can be rewritten consistently."""
    fill(engine, 23)
    sql(engine, "UPDATE audit_records SET data = :d WHERE seq = 22", d='{"n":0,"serial":"0"}')
    rechain(engine, 22)
    assert verify(engine).ok


def test_head_hash_mismatch_is_named(log20: Engine) -> None:
    sql(log20, "UPDATE audit_head SET hash = :h", h="d" * 64)
    assert found(verify(log20)) == {("head-mismatch", 20)}


def test_head_rolled_back_by_one(log20: Engine) -> None:
    sql(log20, "UPDATE audit_head SET seq = 19")
    assert found(verify(log20)) == {("inserted", 20), ("head-mismatch", 19)}


def test_deleted_head_row_is_named(log20: Engine) -> None:
    sql(log20, "DELETE FROM audit_head")
    assert found(verify(log20)) == {("head-mismatch", None)}


def test_an_empty_log_verifies(engine: Engine) -> None:
    report = verify(engine)
    assert report.ok and report.records == 0 and report.checkpoints == 0


def test_problems_are_capped_at_100_and_the_rest_counted(engine: Engine) -> None:
    fill(engine, 150, AuditLog(signer=None))
    sql(engine, "UPDATE audit_records SET actor = 'mallory'")
    report = verify(engine)
    assert len(report.problems) == 100
    assert report.omitted == 50
    assert not report.ok


def test_unsupported_public_key_is_refused(engine: Engine) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    with pytest.raises(AuditError):
        verify(engine, ed25519.Ed25519PrivateKey.generate().public_key())


def test_problem_is_a_frozen_value() -> None:
    p = Problem(3, "modified", "record 3 was modified")
    assert copy.copy(p) == p
    with pytest.raises(AttributeError):
        p.seq = 4  # type: ignore[misc]


# -- properties --------------------------------------------------------------------------

# Keys from a-f cannot spell a secret word, nor "tampered".
_KEYS = st.text(alphabet="abcdef", min_size=1, max_size=4)
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(alphabet=string.printable, max_size=8)
)
_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["cert.issued", "cert.revoked", "key.escrowed", "key.recovered"]),
        st.sampled_from(["ra", "officer@example.org", "ca"]),
        st.dictionaries(_KEYS, _VALUES, max_size=3),
    ),
    min_size=1,
    max_size=20,
)


def build(events: list[tuple[str, str, dict[str, Any]]], every: int) -> Engine:
    engine = make_engine()
    log = AuditLog(signer=KEY, checkpoint_every=every)
    with Session(engine) as session, session.begin():
        for event, actor, data in events:
            log.append(session, event, actor=actor, data=data)
    return engine


def checkpoint_seqs(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [int(s) for s in conn.execute(text("SELECT seq FROM audit_checkpoints")).scalars()]


TAMPERS = [
    "data", "event", "actor", "time", "hash", "prev_hash", "delete", "insert_after",
    "insert_low", "swap", "truncate", "head_seq_up", "head_seq_down", "head_hash",
    "head_delete", "cp_signature", "cp_hash", "rewrite_sealed", "truncate_sealed",
    "renumber_down",
]  # fmt: skip


def tamper(engine: Engine, op: str, data: st.DataObject) -> bool:
    """Apply one tamper operation; False if it does not apply to this log."""
    records = rows(engine)
    n = len(records)
    seqs = checkpoint_seqs(engine)
    i = data.draw(st.integers(1, n), label="seq")
    column = {"data": '{"tampered":true}', "event": "x.tampered", "actor": "mallory",
              "time": "1999-01-01T00:00:00.000000+00:00", "hash": "1" * 64,
              "prev_hash": "f" * 64}  # fmt: skip
    if op in column:
        sql(engine, f"UPDATE audit_records SET {op} = :v WHERE seq = :s", v=column[op], s=i)
    elif op == "delete":
        sql(engine, "DELETE FROM audit_records WHERE seq = :s", s=i)
    elif op == "insert_after":
        gap = data.draw(st.integers(1, 5), label="gap")
        link = data.draw(st.sampled_from([ZERO_HASH] + [r["hash"] for r in records]))
        insert(engine, forge(n + gap, link))
    elif op == "insert_low":
        insert(engine, forge(data.draw(st.integers(-3, 0)), ZERO_HASH))
    elif op == "swap":
        if n < 2:
            return False
        j = data.draw(st.integers(1, n).filter(lambda j: j != i), label="other")
        swap(engine, i, j)
    elif op == "truncate":
        sql(engine, "DELETE FROM audit_records WHERE seq >= :s", s=i)
    elif op == "head_seq_up":
        sql(engine, "UPDATE audit_head SET seq = seq + :d", d=data.draw(st.integers(1, 3)))
    elif op == "head_seq_down":
        sql(engine, "UPDATE audit_head SET seq = :s", s=i - 1)
    elif op == "head_hash":
        sql(engine, "UPDATE audit_head SET hash = :h", h="2" * 64)
    elif op == "head_delete":
        sql(engine, "DELETE FROM audit_head")
    elif op in ("cp_signature", "cp_hash"):
        if not seqs:
            return False
        cp = data.draw(st.sampled_from(seqs), label="checkpoint")
        if op == "cp_hash":
            sql(engine, "UPDATE audit_checkpoints SET hash = :h WHERE seq = :s", h="3" * 64, s=cp)
        else:
            sql(engine, "UPDATE audit_checkpoints SET signature = :g WHERE seq = :s",
                g=hashlib.sha256(b"forged").digest(), s=cp)  # fmt: skip
    elif op == "rewrite_sealed":
        if not seqs or max(seqs) < i:
            return False  # only a checkpoint can catch a consistent rewrite
        sql(engine, "UPDATE audit_records SET data = :v WHERE seq = :s", v=column["data"], s=i)
        rechain(engine, i)
    elif op == "truncate_sealed":
        if not seqs or max(seqs) < i:
            return False
        sql(engine, "DELETE FROM audit_records WHERE seq >= :s", s=i)
        last = records[i - 2]["hash"] if i > 1 else ZERO_HASH
        sql(engine, "UPDATE audit_head SET seq = :s, hash = :h", s=i - 1, h=last)
    elif op == "renumber_down":
        if i == n:
            return False  # that is truncate_sealed
        sql(engine, "DELETE FROM audit_records WHERE seq = :s", s=i)
        shift(engine, i + 1, -1)
        sql(engine, "UPDATE audit_head SET seq = :s", s=n - 1)
    else:  # pragma: no cover
        raise AssertionError(op)
    return True


@settings(max_examples=60, deadline=None)
@given(events=_EVENTS, every=st.integers(1, 6))
def test_untampered_logs_always_verify(events: list[Any], every: int) -> None:
    engine = build(events, every)
    report = verify(engine)
    assert report.ok, report.problems
    assert report.records == len(events)
    assert report.checkpoints == len(events) // every


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_EVENTS, every=st.integers(1, 6), op=st.sampled_from(TAMPERS), data=st.data())
def test_any_single_tamper_is_detected(
    events: list[Any], every: int, op: str, data: st.DataObject
) -> None:
    engine = build(events, every)
    if not tamper(engine, op, data):
        return
    report = verify(engine)
    assert not report.ok, f"{op} went unnoticed"
    assert all(p.kind in {"modified", "deleted", "inserted", "reordered", "truncated",
                          "bad-checkpoint", "head-mismatch"} for p in report.problems)  # fmt: skip
    # Appending after tampering never repairs the evidence.
    if op not in ("head_delete", "head_seq_down", "head_seq_up"):
        with Session(engine) as session, session.begin():
            try:
                AuditLog(signer=KEY, checkpoint_every=every).append(
                    session, "cert.issued", actor="ra", data={}
                )
            except AuditError:
                return
        assert not verify(engine).ok
