"""The dashboard's certificate counts (they read the whole certificates table) are kept
for a minute per node, with the time they were taken; a revocation made in the console
counts at once; the rest of the dashboard is read on every visit; /metrics counts anew."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mailpki.instance import console_overview
from mailpki.instance.console_access import ConsoleUser
from mailpki.instance.console_overview import dashboard, forget_certificate_figures
from mailpki.instance.console_people import revoke
from mailpki.instance.health import read_status
from mailpki.instance.instance import Instance
from mailpki.policy.person import Person

pytestmark = pytest.mark.integration

OPERATOR = ConsoleUser("olga", "Olga Operator", "olga@example.com", frozenset({"operator"}))


@pytest.fixture
def instance(sqlite_home: Path) -> Iterator[Instance]:
    opened = Instance.open(sqlite_home)
    forget_certificate_figures(opened)  # nothing kept from another test of this process
    try:
        yield opened
    finally:
        forget_certificate_figures(opened)
        opened.close()


def issue(instance: Instance, n: int) -> str:
    person = Person.from_untrusted(
        email=f"person{n}@example.com", name=f"Person {n}", given_name="Person", surname=str(n)
    )
    issued = instance.ca.issue_for_key(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        person,
        profile="mailbox-strict",
        actor="test",
    )
    return format(issued.certificate.serial_number, "X")


def test_counts_are_kept_a_minute_and_a_console_revocation_counts_at_once(
    instance: Instance,
) -> None:
    first_serial = issue(instance, 1)
    before = datetime.now(UTC)
    board = dashboard(instance)
    assert board.status.certificates_valid == 1
    assert board.status.certificates_revoked == 0
    assert board.expiring_soon == 0  # issued for longer than 30 days
    assert before <= board.certificates_counted_at <= datetime.now(UTC)

    # Issued elsewhere (the CLI, another node): the kept counts do not know it yet ...
    issue(instance, 2)
    kept = dashboard(instance)
    assert kept.status.certificates_valid == 1
    assert kept.certificates_counted_at == board.certificates_counted_at
    # ... /metrics does, and so does everything else on the dashboard.
    assert read_status(instance).certificates_valid == 2
    assert kept.status.audit_records > board.status.audit_records

    # Revoked in this node's console: counted on the next visit.
    revoke(instance, OPERATOR, first_serial, "superseded")
    after = dashboard(instance)
    assert after.certificates_counted_at > board.certificates_counted_at
    assert (after.status.certificates_valid, after.status.certificates_revoked) == (1, 1)
    assert after.status.certificates_issued == 2


def test_counts_older_than_a_minute_are_taken_again(
    instance: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    issue(instance, 1)
    board = dashboard(instance)
    issue(instance, 2)
    assert dashboard(instance).status.certificates_valid == 1
    monkeypatch.setattr(console_overview, "CERTIFICATE_COUNTS_SECONDS", 0.0)
    again = dashboard(instance)
    assert again.status.certificates_valid == 2
    assert again.certificates_counted_at > board.certificates_counted_at
