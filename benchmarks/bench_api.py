"""The JSON API over real HTTP from `mailpki serve`, with many certificates stored.

A throwaway instance (P-256 CA, SQLite unless --database/--postgres) is filled with
--certificates (100,000) issued certificates, their escrow records and audit records
(benchmarks/load_scale.py; a tenth of them revoked), and --invitees (10,000) people in
its embedded directory (`mailpki directory import`). Tokens come from `mailpki api-token
create` (an operator and an auditor); the instance mails through an SMTP sink (aiosmtpd)
in this process. The per-token rate limit is raised (`api.rate_per_minute`) so that the
benchmark's own calls are not refused; nothing else is changed.

  invitations  one POST /api/v1/invitations with every invitee's login; the time of
               the call, how many it reports invited and queued, how many mails the
               SMTP sink got by the end of the call and in all (the server's outbox
               sends them; the benchmark waits --mail-wait seconds, 90, for them).
  reads        --requests (200) calls per endpoint (GET /audit/status: --audit-requests,
               10), one keep-alive client, one after the other, each with its own
               argument:
                 GET /api/v1/people?q=           (directory search, a login prefix)
                 GET /api/v1/certificates?email= (certificates of one mail address)
                 GET /api/v1/certificates/{serial}
                 GET /api/v1/recovery/report
                 GET /api/v1/audit/status        (what `audit verify` says)

    python -m benchmarks.bench_api                 # 100,000 certificates, 10,000 invitees
    python -m benchmarks.bench_api --quick         # 20,000 certificates, 2,000 invitees
    python -m benchmarks.bench_api --postgres

Targets: API reads with 100,000 certificates stored p95 <= 100 ms; invitations for
10,000 people in one call <= 30 s.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks import load_scale
from benchmarks.bench_ocsp import server
from benchmarks.bench_portal import summary_ms
from benchmarks.soak_cluster import Mail

TARGET_READ_P95_MS = 100.0
TARGET_INVITE_S = 30.0
PREFIX = "/api/v1"


def cli(home: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "mailpki", *args, "--home", str(home)]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"mailpki {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


class Client:
    """One keep-alive connection with a bearer token."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        t0 = time.perf_counter()
        try:
            self.conn.request(method, PREFIX + path, body=data, headers=headers)
            resp = self.conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected):
            # uvicorn closes a keep-alive connection idle for 5 s: once more, on a new one.
            self.conn.close()
            t0 = time.perf_counter()
            self.conn.request(method, PREFIX + path, body=data, headers=headers)
            resp = self.conn.getresponse()
        raw = resp.read()
        seconds = time.perf_counter() - t0
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw[:300]
        return resp.status, parsed, seconds

    def close(self) -> None:
        self.conn.close()


def set_up(home: Path, workdir: Path, invitees: int, mail_port: int) -> None:
    people_csv = workdir / "people.csv"
    with people_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["login", "mail", "name", "given_name", "surname", "site", "enabled"])
        for i in range(invitees):
            writer.writerow([
                f"E{i:05d}", f"invitee{i:05d}@{common.DOMAIN}", f"Invitee Person{i}",
                "Invitee", f"Person{i}", "HQ", "true",
            ])  # fmt: skip
    cli(home, "directory", "import", str(people_csv))
    for key, value in (
        ("smtp.host", "127.0.0.1"),
        ("smtp.port", str(mail_port)),
        ("api.rate_per_minute", "1000000"),
        ("keymanager.pool_size", "0"),  # no key-pool refill competing with the timing
    ):
        cli(home, "config", "set", key, value)


def token(home: Path, name: str, role: str) -> str:
    return cli(home, "api-token", "create", "--name", name, "--role", role).strip().splitlines()[-1]


def reads(
    operator: Client,
    auditor: Client,
    count: int,
    audit_count: int,
    certificates: int,
    invitees: int,
) -> dict[str, dict[str, Any]]:
    rng = random.Random(14)
    status, page, _ = operator.call("GET", "/certificates?limit=500")
    if status != 200:
        raise SystemExit(f"GET /certificates: HTTP {status}: {page}")
    serials = [item["serial"] for item in page["items"]]
    cases: list[tuple[str, Client, Any]] = [
        ("GET /people?q=", operator, lambda: f"/people?q=E{rng.randrange(invitees):05d}"[:-1]),
        (
            "GET /certificates?email=",
            operator,
            lambda: f"/certificates?email=user{rng.randrange(certificates):08d}@{common.DOMAIN}",
        ),
        ("GET /certificates/{serial}", operator, lambda: f"/certificates/{rng.choice(serials)}"),
        ("GET /recovery/report", auditor, lambda: "/recovery/report"),
        # The check of the whole log, shown while at most 5 minutes old (the first call
        # of a run makes it) ...
        ("GET /audit/status", auditor, lambda: "/audit/status"),
        # ... and made on every call: it reads the whole log, so fewer calls
        # (--audit-requests); an operator's deliberate "check now", not a read target.
        ("GET /audit/status?fresh=true", auditor, lambda: "/audit/status?fresh=true"),
    ]
    results: dict[str, dict[str, Any]] = {}
    for name, client, path_of in cases:
        latencies = []
        for _ in range(audit_count if "fresh" in name else count):
            path = path_of()
            status, body, seconds = client.call("GET", path)
            if status != 200:
                raise SystemExit(f"{path}: HTTP {status}: {body}")
            latencies.append(seconds)
        results[name] = {"calls": len(latencies), **summary_ms(latencies)}
        common.log(
            f"  {name:30} p50 {results[name]['p50_ms']:7.1f} ms  "
            f"p95 {results[name]['p95_ms']:7.1f} ms"
        )
    return results


def invitations(operator: Client, invitees: int, mail: Mail, wait: float) -> dict[str, Any]:
    logins = [f"E{i:05d}" for i in range(invitees)]
    status, body, seconds = operator.call("POST", "/invitations", {"logins": logins})
    if status != 200:
        raise SystemExit(f"POST /invitations: HTTP {status}: {str(body)[:500]}")
    received_in_call = len(mail.received)
    common.log(
        f"  POST /invitations ({invitees} logins): {seconds:.1f} s, invited {body['invited']}, "
        f"{len(body['errors'])} errors; {received_in_call} mails received by the end of the call"
    )
    # The mail must go out: the server's outbox sends what the call queued.
    t0 = time.monotonic()
    while len(mail.received) < body["invited"] and time.monotonic() - t0 < wait:
        time.sleep(1)
    waited = time.monotonic() - t0
    common.log(f"  mails received {waited:.0f} s after the call: {len(mail.received)}")
    return {
        "logins": invitees,
        "seconds": round(seconds, 2),
        "invited": body["invited"],
        "queued": body.get("queued"),
        "errors": len(body["errors"]),
        "mails_received_by_end_of_call": received_in_call,
        "mails_received": len(mail.received),
        "mail_wait_s": round(waited, 1),
        "mails_per_s_by_the_outbox": round((len(mail.received) - received_in_call) / waited, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=100_000)
    parser.add_argument("--invitees", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="calls per read endpoint")
    parser.add_argument("--audit-requests", type=int, default=10, help="calls of GET /audit/status")
    parser.add_argument(
        "--mail-wait",
        type=float,
        default=90,
        help="seconds to wait after the call for the outbox to send the invitations",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes making certificates")
    parser.add_argument("--quick", action="store_true", help="20,000 certificates, 2,000 invitees")
    common.add_database_options(parser)
    args = common.parse_args(parser)
    if args.quick:
        args.certificates, args.invitees, args.requests = 20_000, 2_000, 100
        args.audit_requests = 5
    if (
        min(args.certificates, args.invitees, args.requests, args.audit_requests) < 1
        or args.invitees > 50_000
    ):
        parser.error("--certificates, --invitees (at most 50,000), --requests must be >= 1")
    result: dict[str, Any] = {"benchmark": "api", "machine": common.machine()}
    with (
        common.temp_dir("mailpki-bench-api-") as workdir,
        common.database_for(args, workdir) as url,
    ):
        home = workdir / "home"
        common.create_instance(home, ca_key_type="p256", database_url=url)
        mail = Mail()
        mail.start()
        try:
            set_up(home, workdir, args.invitees, mail.port)
            loaded = load_scale.load(
                home, args.certificates, args.certificates // 10, args.workers, 5_000
            )
            common.log(f"loaded {loaded['loaded']:,} certificates in {loaded['seconds']} s")
            operator_token = token(home, "bench-operator", "operator")
            auditor_token = token(home, "bench-auditor", "auditor")
            port = common.free_port()
            with server(home, port, 1, workdir / "server.log"):
                operator, auditor = Client(port, operator_token), Client(port, auditor_token)
                common.log(f"reads ({args.requests} calls per endpoint):")
                result["reads"] = reads(
                    operator,
                    auditor,
                    args.requests,
                    args.audit_requests,
                    args.certificates,
                    args.invitees,
                )
                result["invitations"] = invitations(operator, args.invitees, mail, args.mail_wait)
                operator.close()
                auditor.close()
        finally:
            mail.stop()
    result.update(
        database=common.database_kind(url),
        certificates=args.certificates,
        invitees=args.invitees,
    )
    worst = max(r["p95_ms"] for r in result["reads"].values())
    result["targets"] = [
        *(
            common.target(f"{name} p95", r["p95_ms"], "ms", TARGET_READ_P95_MS, "<=")
            for name, r in result["reads"].items()
            if "fresh" not in name
        ),
        common.target(
            f"invitations for {args.invitees} people in one call",
            result["invitations"]["seconds"],
            "s",
            TARGET_INVITE_S,
            "<=",
        ),
    ]
    common.log(f"worst read p95: {worst} ms (target {TARGET_READ_P95_MS} ms)")
    common.emit(result)


if __name__ == "__main__":
    main()
