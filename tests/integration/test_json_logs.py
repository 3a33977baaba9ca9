"""`log.format = json` and X-Request-ID, read from a real `mailpki serve`'s stderr."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.integration.cli_helpers import mailpki


def _get(url: str, request_id: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if request_id is not None:
        request.add_header("X-Request-ID", request_id)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers.get("X-Request-ID", "")


def _json_lines(log: Path, wanted: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while True:
        lines = []
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))  # every JSON-looking line must parse
        access = [entry for entry in lines if entry.get("logger") == "mailpki.access"]
        if len(access) >= wanted or time.monotonic() > deadline:
            return access
        time.sleep(0.1)


def test_json_lines_carry_the_request_id_the_response_names(
    sqlite_home: Path, tmp_path: Path, serve: Callable[[], str]
) -> None:
    assert mailpki("config", "set", "--home", sqlite_home, "log.format", "json").code == 0
    bad = mailpki("config", "set", "--home", sqlite_home, "log.format", "xml")
    assert bad.code != 0 and "plain, json" in bad.err
    url = serve()
    status, given = _get(f"{url}/healthz", "ticket-4711")
    assert status == 200 and given == "ticket-4711"
    _, made = _get(f"{url}/healthz?mail=alice@example.com&secret=hunter2")
    assert len(made) == 16 and made != "ticket-4711"
    _, replaced = _get(f"{url}/healthz", "x" * 65)  # too long: a fresh id instead
    assert len(replaced) == 16

    access = _json_lines(tmp_path / "serve.log", 3)
    by_id = {entry["request_id"]: entry for entry in access}
    assert by_id["ticket-4711"]["path"] == "/healthz"
    assert by_id["ticket-4711"]["status"] == 200
    assert by_id["ticket-4711"]["level"] == "info"
    certs = by_id[made]
    assert certs["path"] == "/healthz?mail=…&secret=…"  # query values never logged
    assert "hunter2" not in (tmp_path / "serve.log").read_text()
    assert isinstance(certs["ms"], float | int) and certs["client"] == "127.0.0.1"
