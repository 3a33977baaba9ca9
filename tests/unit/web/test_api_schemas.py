"""The API's view of an expiring certificate: serials as `certs list` prints them
(zero-padded to 32 digits), whole days left, the successor of a renewed one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailpki.instance.expiry import ExpiringCertificate as Row
from mailpki.web.api.schemas import ExpiringCertificate

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def test_serials_are_padded_as_certs_list_prints_them() -> None:
    row = Row("ABC", "a@example.com", "p", NOW + timedelta(days=3, hours=23), "1F")
    view = ExpiringCertificate.of(row, NOW)
    assert view.serial == "0" * 29 + "ABC"
    assert view.renewed is True and view.renewed_by == "0" * 30 + "1F"
    assert view.days_left == 3  # whole days: 3 days 23 hours is 3


def test_less_than_a_day_left_is_zero_and_not_renewed_has_no_successor() -> None:
    row = Row("7" * 32, "a@example.com", "p", NOW + timedelta(minutes=5), None)
    view = ExpiringCertificate.of(row, NOW)
    assert view.serial == "7" * 32
    assert view.days_left == 0
    assert view.renewed is False and view.renewed_by is None
