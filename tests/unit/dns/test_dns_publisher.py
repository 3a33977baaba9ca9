"""The SMIMEA outbox with a recording updater (the real BIND is in the integration
suite): one update per address with its current set, retries with backoff, the
directory publisher leaves these jobs alone."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.name
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from mailpki.directory.publisher import Publisher
from mailpki.directory.registry import DirectoryRegistry
from mailpki.dns.publisher import DnsPublisher, queue_update
from mailpki.dns.settings import DnsSettings, ServerAddress, TsigKey
from mailpki.dns.smimea import SmimeaRecord, owner_name
from mailpki.errors import DnsError, DnsUnavailable
from mailpki.store.db import Database
from mailpki.store.models import PublishJob
from tests.fixtures.smime_pki import root_ca

SETTINGS = DnsSettings(
    server=ServerAddress("127.0.0.1", 53),
    zone="example.com",
    key=TsigKey("k", "hmac-sha256", base64.b64decode("MDEyMzQ1Njc4OWFiY2RlZg==")),
    ttl=600,
)


class RecordingUpdater:
    def __init__(self) -> None:
        self.sent: list[tuple[dns.name.Name, list[bytes]]] = []
        self.fail: DnsError | None = None

    def replace(self, owner: dns.name.Name, records: Sequence[SmimeaRecord]) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((owner, [r.rdata.cert for r in records]))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    database.migrate()
    yield database
    database.dispose()


def make(
    db: Database, certificates: dict[str, list[bytes]]
) -> tuple[DnsPublisher, RecordingUpdater]:
    updater = RecordingUpdater()
    publisher = DnsPublisher(
        db,
        SETTINGS,
        certificates_of=lambda email: certificates.get(email, []),
        updater=updater,  # type: ignore[arg-type]
    )
    return publisher, updater


def queue(db: Database, email: str, serial: str = "01") -> None:
    with db.transaction() as session:
        queue_update(session, serial=serial, email=email)


def test_one_update_per_address_with_its_current_set(db: Database) -> None:
    der = root_ca("x")[0].public_bytes(Encoding.DER)
    publisher, updater = make(db, {"ann@example.com": [der]})
    queue(db, "Ann@example.com", "01")
    queue(db, "ann@example.com", "02")  # issue then renew: one update carries the set
    queue(db, "bob@example.com", "03")  # revoked everything: an empty set removes the name
    queue(db, "eve@example.org", "04")  # outside the zone: skipped, done
    report = publisher.run_once()
    assert (report.updated, report.skipped, report.failed) == (2, 1, 0)
    assert updater.sent == [
        (owner_name("ann@example.com"), [der]),
        (owner_name("bob@example.com"), []),
    ]
    assert publisher.pending() == 0
    assert publisher.run_once().updated == 0


@pytest.mark.parametrize("error", [DnsUnavailable("down"), DnsError("BADKEY")])
def test_a_failure_keeps_every_job_queued_with_backoff(db: Database, error: DnsError) -> None:
    publisher, updater = make(db, {})
    queue(db, "ann@example.com")
    queue(db, "bob@example.com")
    now = datetime.now(UTC)
    publisher._clock = lambda: now
    updater.fail = error
    report = publisher.run_once()
    assert (report.updated, report.failed) == (0, 2) and report.errors == [str(error)]
    assert publisher.pending() == 2
    with db.session() as session:
        jobs = list(session.scalars(select(PublishJob)))
    assert all(j.attempts == 1 and j.last_error == str(error) for j in jobs)
    assert all(j.next_attempt_at.replace(tzinfo=UTC) == now + timedelta(seconds=5) for j in jobs)
    updater.fail = None
    assert publisher.run_once().updated == 0  # not due yet
    publisher._clock = lambda: now + timedelta(seconds=6)
    assert publisher.run_once().updated == 2 and publisher.pending() == 0


def test_the_directory_publisher_leaves_smimea_jobs_alone(db: Database) -> None:
    queue(db, "ann@example.com")
    directory = Publisher(db, DirectoryRegistry(db), issuer=root_ca("x")[0].subject)
    assert directory.pending() == 0
    report = directory.run_once()
    assert (report.published, report.skipped, report.failed) == (0, 0, 0)
    publisher, _ = make(db, {})
    assert publisher.pending() == 1


def test_sync_sends_every_address_and_reports_progress(db: Database) -> None:
    der = root_ca("x")[0].public_bytes(Encoding.DER)
    publisher, updater = make(db, {"ann@example.com": [der], "bob@example.com": [der]})
    seen: list[int] = []
    report = publisher.sync(
        ["ann@example.com", "bob@example.com", "eve@example.org"], progress=seen.append
    )
    assert report.updated == 2 and seen == [1, 2, 3]
    assert [owner for owner, _ in updater.sent] == [
        owner_name("ann@example.com"),
        owner_name("bob@example.com"),
    ]
    updater.fail = DnsUnavailable("down")
    report = publisher.sync(["ann@example.com", "bob@example.com"])
    assert report.failed == 1 and report.errors == ["ann@example.com: down"]
