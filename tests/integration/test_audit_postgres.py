"""The audit log on a real PostgreSQL: concurrent appenders, streamed verification."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session

from mailpki.audit import AuditLog, genesis, verify_log
from mailpki.store.models import AuditCheckpoint, AuditRecord, Base

pytestmark = pytest.mark.integration

KEY = ec.generate_private_key(ec.SECP256R1())
THREADS = 4
PER_THREAD = 50


@pytest.fixture
def engine(postgres_database: str) -> Iterator[Engine]:
    engine = create_engine(postgres_database, pool_size=THREADS + 1)
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        genesis(session)
    yield engine
    engine.dispose()


def test_concurrent_appenders_keep_one_linear_chain(engine: Engine) -> None:
    log = AuditLog(signer=KEY, checkpoint_every=25)
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def appender(worker: int) -> None:
        try:
            start.wait()
            with Session(engine) as session:
                for i in range(PER_THREAD):
                    with session.begin():  # one transaction per action, as callers do
                        log.append(
                            session, "cert.issued", actor=f"worker{worker}",
                            data={"worker": worker, "i": i},
                        )  # fmt: skip
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors

    total = THREADS * PER_THREAD
    with Session(engine) as session:
        seqs = session.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)).all()
        checkpoints = session.scalars(select(AuditCheckpoint.seq).order_by(AuditCheckpoint.seq))
        assert seqs == list(range(1, total + 1))
        assert checkpoints.all() == list(range(25, total + 1, 25))
        report = verify_log(session, KEY.public_key())
    assert report.ok, report.problems
    assert (report.records, report.last_sealed_seq) == (total, total)


def test_tampering_is_found_while_streaming_on_postgres(engine: Engine) -> None:
    log = AuditLog(signer=KEY, checkpoint_every=10)
    with Session(engine) as session, session.begin():
        for i in range(30):
            log.append(session, "cert.issued", actor="ra", data={"i": i})
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_records WHERE seq = 4"))
        # Swapping needs look-ups by hash in the middle of the streamed walk.
        conn.execute(text("UPDATE audit_records SET seq = -1 WHERE seq = 12"))
        conn.execute(text("UPDATE audit_records SET seq = 12 WHERE seq = 17"))
        conn.execute(text("UPDATE audit_records SET seq = 17 WHERE seq = -1"))
    with Session(engine) as session:
        report = verify_log(session, KEY.public_key())
    kinds = {(p.kind, p.seq) for p in report.problems}
    assert {("deleted", 4), ("reordered", 12), ("reordered", 17)} <= kinds
