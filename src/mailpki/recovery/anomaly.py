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
    """Keys recovered so far (a key-history recovery counts each of its keys), not
    counting the recovery being decided."""

    admin_hour: int
    admin_day: int
    total_day: int
    # Recoveries in the `average_days` days before the last 24 hours.
    trailing_total: int


def crossed(counts: Counts, limits: Thresholds, *, keys: int = 1) -> list[tuple[str, str]]:
    """(rule, detail) for every limit this recovery of `keys` more keys would exceed."""
    if keys < 1:
        raise ValueError("a recovery releases at least one key")
    found: list[tuple[str, str]] = []
    if counts.admin_hour + keys > limits.per_admin_hour:
        found.append(
            (
                "per-admin-hour",
                f"{counts.admin_hour + keys} keys recovered by this admin in an hour "
                f"(limit {limits.per_admin_hour})",
            )
        )
    if counts.admin_day + keys > limits.per_admin_day:
        found.append(
            (
                "per-admin-day",
                f"{counts.admin_day + keys} keys recovered by this admin in a day "
                f"(limit {limits.per_admin_day})",
            )
        )
    if counts.total_day + keys > limits.total_day:
        found.append(
            (
                "total-day",
                f"{counts.total_day + keys} keys recovered in a day (limit {limits.total_day})",
            )
        )
    average = counts.trailing_total / limits.average_days
    today = counts.total_day + keys
    if today >= limits.average_minimum and today > limits.average_multiple * average:
        found.append(
            (
                "average-multiple",
                f"{today} keys recovered today, more than {limits.average_multiple:g}x "
                f"the trailing daily average of {average:.2f}",
            )
        )
    return found
