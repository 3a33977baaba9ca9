"""Pure parts of the lifecycle: the notice thresholds, the settings' parsers, the report."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailpki.ca.serials import show_serial
from mailpki.instance.config import _mail_list, notice_days
from mailpki.instance.expiry import _threshold
from mailpki.instance.leavers import Leaver
from mailpki.instance.lifecycle import LifecycleReport


@pytest.mark.parametrize(
    ("days_left", "expected"),
    [(40, None), (30, 30), (29.5, 30), (7.01, 30), (7, 7), (5, 7), (1, 1), (0.2, 1)],
)
def test_the_smallest_threshold_reached_is_the_one_noticed(
    days_left: float, expected: int | None
) -> None:
    assert _threshold(days_left, [30, 7, 1]) == expected


@pytest.mark.parametrize("value", ["", " ", "30,,7", "a", "30;7", "-1", "0", "366", "7,7",
                                   "1,2,3,4,5,6,7,8,9,10,11", "3.5"])  # fmt: skip
def test_notice_days_refuses_what_is_not_a_list_of_days(value: str) -> None:
    with pytest.raises(ValueError):
        notice_days(value)


def test_notice_days_keeps_them_largest_first() -> None:
    assert notice_days(" 1, 30 ,7") == "30,7,1"


@given(st.text(max_size=40))
def test_notice_days_either_refuses_or_gives_distinct_days_in_range(value: str) -> None:
    try:
        parsed = notice_days(value)
    except ValueError:
        return
    days = [int(d) for d in parsed.split(",")]
    assert days == sorted(set(days), reverse=True)
    assert all(1 <= d <= 365 for d in days)


@pytest.mark.parametrize("value", ["a", "x @example.com", "@example.com", "a@b.c,no"])
def test_officer_list_refuses_what_is_not_mail(value: str) -> None:
    with pytest.raises(ValueError):
        _mail_list(value)


def test_officer_list_accepts_mail_and_empty() -> None:
    assert _mail_list(" pki@example.com , sec@example.com ") == "pki@example.com,sec@example.com"
    assert _mail_list("") == ""


def test_report_says_what_the_run_did() -> None:
    report = LifecycleReport()
    report.notices.notices.append(("a@example.com", "AB12", 7))
    report.notices.summary_sent_to.append("officer@example.com")
    report.leavers.leavers.append(Leaver("b@example.com", "gone from the directory", ("CD34",)))
    report.leavers.revoked.append("CD34")
    report.notices.withdrawn.append("EF56")
    assert report.lines() == [
        f"expiry notice (7 days) to a@example.com for {show_serial('AB12')}",
        "daily summary sent to officer@example.com",
        "b@example.com: gone from the directory",
        f"revoked {show_serial('CD34')} (affiliationChanged)",
        f"withdrew expired {show_serial('EF56')} from the directory",
    ]
    assert report.summary() == (
        "1 notices, 1 summary, 1 leavers (1 certificates revoked), 1 expired withdrawn"
    )
