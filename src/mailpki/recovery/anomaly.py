"""Anomaly rules: when recoveries are unusual enough to alert a second contact."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    per_admin_hour: int
    per_admin_day: int
    total_day: int
    average_multiple: float
    average_days: int
    average_minimum: int


@dataclass(frozen=True)
class Counts:
    """Recoveries so far, not counting the one being decided."""

    admin_hour: int
    admin_day: int
    total_day: int
    # Recoveries in the `average_days` days before the last 24 hours.
    trailing_total: int


def crossed(counts: Counts, limits: Thresholds) -> list[tuple[str, str]]:
    """(rule, detail) for every limit this one more recovery would exceed."""
    found: list[tuple[str, str]] = []
    if counts.admin_hour + 1 > limits.per_admin_hour:
        found.append(
            (
                "per-admin-hour",
                f"{counts.admin_hour + 1} recoveries by this admin in an hour "
                f"(limit {limits.per_admin_hour})",
            )
        )
    if counts.admin_day + 1 > limits.per_admin_day:
        found.append(
            (
                "per-admin-day",
                f"{counts.admin_day + 1} recoveries by this admin in a day "
                f"(limit {limits.per_admin_day})",
            )
        )
    if counts.total_day + 1 > limits.total_day:
        found.append(
            ("total-day", f"{counts.total_day + 1} recoveries in a day (limit {limits.total_day})")
        )
    average = counts.trailing_total / limits.average_days
    today = counts.total_day + 1
    if today >= limits.average_minimum and today > limits.average_multiple * average:
        found.append(
            (
                "average-multiple",
                f"{today} recoveries today, more than {limits.average_multiple:g}x "
                f"the trailing daily average of {average:.2f}",
            )
        )
    return found
