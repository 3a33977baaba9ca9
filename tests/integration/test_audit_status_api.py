"""GET /api/v1/audit/status shows a recent check (the check reads the whole log) with
the time it ran, and checks now when asked for `fresh`; the console shares the result."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration


def status(base: str, token: str, query: str = "") -> dict[str, object]:
    request = urllib.request.Request(f"{base}/api/v1/audit/status{query}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        body: dict[str, object] = json.loads(response.read())
        return body


def test_a_recent_check_is_shown_and_fresh_checks_now(
    sqlite_home: Path, serve: Callable[[], str]
) -> None:
    made = mailpki(
        "api-token", "create", "--home", sqlite_home, "--name", "audits", "--role", "auditor"
    )
    assert made.code == 0, made.err
    token = made.out.strip()
    base = serve()

    first = status(base, token)
    assert first["intact"] is True
    again = status(base, token)
    assert again["checked_at"] == first["checked_at"]  # the same check, not run again

    # Something audited happens: a cached answer may not know it yet; a fresh one does.
    assert (
        mailpki("config", "set", "--home", sqlite_home, "lifecycle.notice_days", "20,5").code == 0
    )
    fresh = status(base, token, "?fresh=true")
    assert datetime.fromisoformat(str(fresh["checked_at"])) > datetime.fromisoformat(
        str(first["checked_at"])
    )
    assert fresh["intact"] is True
    assert int(str(fresh["records"])) > int(str(first["records"]))
