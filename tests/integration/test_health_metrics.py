"""/healthz, /readyz and /metrics of a real `mailpki serve`, read over HTTP."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.ci_policy import in_ci
from tests.integration.cli_helpers import mailpki, make_csr


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("content-type", "")


def _samples(body: bytes) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def test_ready_and_metrics_count_what_the_database_holds(
    sqlite_home: Path, tmp_path: Path, serve: Callable[[], str]
) -> None:
    for name in ("alice", "bob"):
        result = mailpki(
            "ca", "issue", "--home", sqlite_home, "--csr", make_csr(tmp_path, name),
            "--email", f"{name}@example.com", "--name", f"{name.title()} Smith",
            "--out", tmp_path / f"{name}.pem",
        )  # fmt: skip
        assert result.code == 0, result.err
    serial = result.out.split("serial ", 1)[1].split()[0]
    assert mailpki("ca", "revoke", "--home", sqlite_home, serial).code == 0
    url = serve()

    status, body, _ = _get(f"{url}/healthz")
    assert (status, body) == (200, b"ok\n")
    status, body, ctype = _get(f"{url}/readyz")
    assert status == 200, body
    ready = json.loads(body)
    assert ready["ready"] is True
    assert set(ready["checks"]) == {"database", "schema", "keys", "audit"}

    status, body, ctype = _get(f"{url}/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    samples = _samples(body)
    assert samples["mailpki_certificates_issued_total"] == 2
    assert samples["mailpki_certificates_revoked_total"] == 1
    assert samples["mailpki_certificates_valid"] == 1
    assert samples["mailpki_recovery_alerts_open"] == 0
    assert "mailpki_crl_age_seconds{crl=issuing.crl}" in samples
    # The request above was counted by its route template.
    assert samples["mailpki_http_requests_total{route=/readyz,status=200}"] >= 1
    _promtool_accepts(body)


def _promtool_accepts(body: bytes) -> None:
    """Prometheus's own linter (Debian's prometheus package) reads the output cleanly."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if in_ci():
            pytest.fail("promtool is missing (CI=true: the test command installs prometheus)")
        pytest.skip("promtool is not installed")
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_node_on_an_older_schema_is_not_ready(
    sqlite_home: Path, serve: Callable[[], str]
) -> None:
    url = serve()
    assert _get(f"{url}/readyz")[0] == 200
    with sqlite3.connect(sqlite_home / "mailpki.db") as conn:
        current = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    status, body, _ = _get(f"{url}/readyz")
    assert status == 503
    checks = json.loads(body)["checks"]
    assert checks["schema"]["ok"] is False
    assert "mailpki upgrade" in checks["schema"]["detail"]
    assert _get(f"{url}/healthz")[0] == 200  # alive, just not ready
    with sqlite3.connect(sqlite_home / "mailpki.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (current,))
    assert _get(f"{url}/readyz")[0] == 200


def test_metrics_are_refused_to_addresses_not_allowed(
    sqlite_home: Path, serve: Callable[[], str]
) -> None:
    result = mailpki("config", "set", "--home", sqlite_home, "web.metrics_allow", "10.0.0.0/8")
    assert result.code == 0, result.err
    url = serve()
    status, body, _ = _get(f"{url}/metrics")
    assert status == 403
    assert b"mailpki_" not in body
    bad = mailpki("config", "set", "--home", sqlite_home, "web.metrics_allow", "10.0.0.0/8,nope")
    assert bad.code != 0
    assert "not an IP address or network" in bad.err
