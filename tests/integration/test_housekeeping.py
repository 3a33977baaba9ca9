"""The server's housekeeping: lost deliveries revoked, queued mail sent, pool refilled."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mailpki.errors import MailPKIError
from mailpki.instance.enrollments import enroll_one
from mailpki.instance.housekeeping import Housekeeping
from mailpki.instance.instance import Instance
from mailpki.store.models import CertificateRecord, EscrowedKey, OutboxMessage
from tests.integration.cli_helpers import mailpki


class DeliveryLost(MailPKIError):
    pass


def test_housekeeping_revokes_lost_deliveries_sends_mail_and_fills_pool(
    home: Path, tmp_path: Path
) -> None:
    for key, value in (("keymanager.key_type", "p256"), ("keymanager.pool_size", "3")):
        assert mailpki("config", "set", "--home", home, key, value).code == 0
    instance = Instance.open(home)
    try:
        # A delivery that fails after the escrow commit: the record stays pending.
        def lose(step: str) -> None:
            if step == "packaged":
                raise DeliveryLost("the download was interrupted")

        with pytest.raises(DeliveryLost):
            enroll_one(
                instance,
                email="lost@example.com",
                name="Lost Download",
                out=tmp_path / "lost.p12",
                actor="test",
                on_step=lose,
            )
        assert not (tmp_path / "lost.p12").exists()
        with instance.db.session() as session:
            row = session.scalar(
                select(EscrowedKey).where(EscrowedKey.owner_email == "lost@example.com")
            )
            assert row is not None and row.state == "pending"
            serial = row.serial

        chores = Housekeeping(instance)
        chores.run_once()  # still within its lease: left alone
        with instance.db.session() as session:
            assert (
                session.scalar(select(EscrowedKey.state).where(EscrowedKey.serial == serial))
                == "pending"
            )

        with instance.db.transaction() as session:  # the lease runs out
            session.execute(
                update(EscrowedKey)
                .where(EscrowedKey.serial == serial)
                .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
            )
        chores.run_once()
        with instance.db.session() as session:
            assert (
                session.scalar(select(EscrowedKey.state).where(EscrowedKey.serial == serial))
                == "revoked"
            )
            cert = session.scalar(
                select(CertificateRecord).where(CertificateRecord.serial == serial)
            )
            assert cert is not None and cert.status == "revoked"
            assert cert.revocation_reason == "cessation_of_operation"
            unsent = session.scalars(
                select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
            ).all()
            assert unsent == []  # the escrow notice went out through the folder transport
        assert instance.key_manager.pool_size("p256") == 3
    finally:
        instance.close()
    assert list((home / "outbox").glob("*.eml"))
    assert mailpki("audit", "verify", "--home", home).code == 0


def test_a_running_server_fills_the_key_pool(sqlite_home: Path, serve: Callable[[], str]) -> None:
    """`mailpki serve` runs the housekeeping in the background: the pool gets filled."""
    for key, value in (("keymanager.key_type", "p256"), ("keymanager.pool_size", "2")):
        assert mailpki("config", "set", "--home", sqlite_home, key, value).code == 0
    serve()
    instance = Instance.open(sqlite_home)
    try:
        deadline = time.monotonic() + 60
        while instance.key_manager.pool_size("p256") < 2:
            assert time.monotonic() < deadline, "the server did not fill the key pool"
            time.sleep(0.2)
    finally:
        instance.close()


def test_housekeeping_revokes_portal_downloads_never_fetched_and_sends_reminders(
    sqlite_home: Path, tmp_path: Path
) -> None:
    """A PKCS#12 left in the portal past its download window: nobody holds that key but
    the escrow, so its certificate is revoked and the stored file dropped. Unused
    invitations past invitations.reminder_days get their one reminder."""
    from mailpki.instance.portal import Portal
    from mailpki.store.models import Invitation, PortalDownload

    people = tmp_path / "people.csv"
    people.write_text(
        "login,mail,name,given_name,surname,enabled\n"
        "pat,pat@example.com,Pat Doe,Pat,Doe,true\nkim,kim@example.com,Kim Lee,Kim,Lee,true\n"
    )
    assert mailpki("directory", "import", "--home", sqlite_home, people).code == 0
    assert mailpki("invite", "--home", sqlite_home, "kim").code == 0
    instance = Instance.open(sqlite_home)
    try:
        portal = Portal(instance)
        entry = instance.directories.find_by_login("pat")
        assert entry is not None
        identity = {"entry": entry.to_dict(), "method": "pin"}
        token = portal.sessions.create({"csrf": "x"})
        outcome = portal.enroll(
            token, identity, dual_key=False, password=None, confirm=None, legacy=False
        )
        assert outcome.serial is not None and len(outcome.downloads) == 1
        chores = Housekeeping(instance, portal=portal)
        chores.run_once()  # within its window: left alone
        assert instance.ca.get(int(outcome.serial, 16)).status == "valid"

        past = datetime.now(UTC) - timedelta(seconds=1)
        with instance.db.transaction() as session:
            session.execute(update(PortalDownload).values(expires_at=past))
            session.execute(
                update(Invitation).values(sent_at=datetime.now(UTC) - timedelta(days=30))
            )
        chores.run_once()
        assert instance.ca.get(int(outcome.serial, 16)).status == "revoked"
        with instance.db.session() as session:
            assert session.scalar(select(PortalDownload)) is None
            invitations = session.scalars(select(Invitation)).all()
            assert len(invitations) == 2 and invitations[0].revoked_at is not None
        with pytest.raises(MailPKIError):
            portal.take(outcome.downloads[0].handle, token, login="pat")
    finally:
        instance.close()
