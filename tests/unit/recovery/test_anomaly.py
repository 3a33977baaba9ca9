"""Anomaly rules: each fires for the recovery past its limit, not for the one at it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailpki.recovery.anomaly import Counts, Thresholds, crossed

# Limits high enough that only the rule under test can fire.
QUIET = Thresholds(
    per_admin_hour=1000,
    per_admin_day=1000,
    total_day=1000,
    average_multiple=1000.0,
    average_days=30,
    average_minimum=1000,
)
NONE = Counts(admin_hour=0, admin_day=0, total_day=0, trailing_total=0)


def rules(counts: Counts, limits: Thresholds) -> list[str]:
    return [rule for rule, _ in crossed(counts, limits)]


def test_nothing_fires_on_a_quiet_day() -> None:
    assert crossed(NONE, QUIET) == []
    defaults = Thresholds(3, 10, 20, 3.0, 30, 5)
    assert crossed(Counts(1, 2, 3, 90), defaults) == []


# Counts say how many recoveries happened before this one: at `limit - 1` this one is
# the limit-th (allowed), at `limit` it is the limit+1-th (alert).
@pytest.mark.parametrize(
    ("rule", "limit_field", "count_fields"),
    [
        ("per-admin-hour", "per_admin_hour", ("admin_hour", "admin_day", "total_day")),
        ("per-admin-day", "per_admin_day", ("admin_day", "total_day")),
        ("total-day", "total_day", ("total_day",)),
    ],
)
@pytest.mark.parametrize("limit", [1, 3, 10])
def test_count_rules_fire_past_their_limit(
    rule: str, limit_field: str, count_fields: tuple[str, ...], limit: int
) -> None:
    limits = replace(QUIET, **{limit_field: limit})
    # Wider windows hold at least what narrower ones do.
    at_limit = replace(NONE, **dict.fromkeys(count_fields, limit - 1))
    past_limit = replace(NONE, **dict.fromkeys(count_fields, limit))
    assert rules(at_limit, limits) == []
    [(fired, detail)] = crossed(past_limit, limits)
    assert fired == rule
    assert f"{limit + 1} keys recovered" in detail and f"limit {limit}" in detail
    assert rules(replace(NONE, **dict.fromkeys(count_fields, limit + 5)), limits) == [rule]


def test_average_rule_fires_past_the_multiple() -> None:
    # 300 recoveries over 30 days: 10 a day; three times that is 30.
    limits = replace(QUIET, average_multiple=3.0, average_days=30, average_minimum=5)
    assert rules(Counts(0, 0, 29, 300), limits) == []  # today's is the 30th: not more than 30
    [(fired, detail)] = crossed(Counts(0, 0, 30, 300), limits)  # the 31st
    assert fired == "average-multiple"
    assert "31 keys recovered today" in detail and "3x" in detail and "10.00" in detail


def test_average_rule_needs_its_minimum() -> None:
    # No history: any recovery is "more than 3x the average" of 0, yet a handful is normal.
    limits = replace(QUIET, average_multiple=3.0, average_days=30, average_minimum=5)
    assert rules(Counts(0, 0, 3, 0), limits) == []  # the 4th today
    assert rules(Counts(0, 0, 4, 0), limits) == ["average-multiple"]  # the 5th
    # Over the minimum but within the multiple: nothing.
    assert rules(Counts(0, 0, 9, 900), limits) == []


def test_average_with_a_fractional_trailing_average() -> None:
    # 10 recoveries over 7 days: ~1.43 a day; 2x is ~2.86, so the 3rd today is too many.
    limits = replace(QUIET, average_multiple=2.0, average_days=7, average_minimum=1)
    assert rules(Counts(0, 0, 1, 10), limits) == []
    assert rules(Counts(0, 0, 2, 10), limits) == ["average-multiple"]


def test_every_crossed_rule_is_reported_in_order() -> None:
    limits = Thresholds(2, 4, 6, 2.0, 10, 3)
    assert rules(Counts(2, 4, 6, 10), limits) == [
        "per-admin-hour",
        "per-admin-day",
        "total-day",
        "average-multiple",
    ]


def test_a_key_history_counts_every_key() -> None:
    """Three keys in one recovery are three recoveries for every rule."""
    limits = replace(QUIET, per_admin_hour=3, per_admin_day=3, total_day=3)
    assert crossed(NONE, limits, keys=3) == []
    fired = crossed(NONE, limits, keys=4)
    assert [rule for rule, _ in fired] == ["per-admin-hour", "per-admin-day", "total-day"]
    assert "4 keys recovered by this admin in an hour" in fired[0][1]
    one_before = Counts(admin_hour=1, admin_day=1, total_day=1, trailing_total=0)
    assert [r for r, _ in crossed(one_before, limits, keys=3)] == [
        "per-admin-hour",
        "per-admin-day",
        "total-day",
    ]
    average = replace(QUIET, average_multiple=1.0, average_minimum=3)
    assert [r for r, _ in crossed(NONE, average, keys=3)] == ["average-multiple"]
    assert crossed(NONE, average, keys=2) == []


def test_a_recovery_releases_at_least_one_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        crossed(NONE, QUIET, keys=0)
