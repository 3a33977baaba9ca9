"""The JSON API and the operator console over real HTTP, with many certificates stored.

Both are served by `mailpki serve`.

A throwaway instance (P-256 CA, SQLite unless --database/--postgres) is filled with
--certificates (100,000) issued certificates, their escrow records and audit records
(benchmarks/load_scale.py; a tenth of them revoked), and its embedded directory
(`mailpki directory import`) with --invitees (10,000) people to invite (logins E00000...)
and, for the person pages, 1,000 people who hold a loaded certificate (logins H00000...,
mail user00000000@... as load_scale names them). --pending-requests (200) of the holders
have an enrollment request waiting for an officer (queued as the approval rules queue
one, with automatic approval off for those calls only). Tokens come from `mailpki
api-token create` (an operator and an auditor); console accounts from `mailpki operator
add --role operator` and `--role auditor`, which log on through the console's own form
(GET /admin for its CSRF token, POST /admin/logon with login, password and the TOTP code
computed from the secret `operator add` prints). The instance mails through an SMTP sink
(aiosmtpd) in this process. The per-token rate limit is raised (`api.rate_per_minute`) so
that the benchmark's own calls are not refused; nothing else is changed.

  reads        --requests (200) calls per endpoint (GET /audit/status?fresh=true:
               --audit-requests, 10), one keep-alive client, one after the other, each
               with its own argument:
                 GET /api/v1/people?q=           (directory search, a login prefix)
                 GET /api/v1/certificates?email= (certificates of one mail address)
                 GET /api/v1/certificates        (no filter: the newest 100, and the total)
                 GET /api/v1/certificates/{serial}
                 GET /api/v1/certificates/{serial}/pem
                 GET /api/v1/requests            (auditor: every request, none decided)
                 GET /api/v1/recovery/report     (auditor)
                 GET /api/v1/audit/status        (auditor: what `audit verify` says, a
                                                 check at most 5 minutes old; the first
                                                 call of the run makes it)
                 GET /api/v1/audit/status?fresh=true  (the check made on every call: it
                                                 reads the whole log; an operator's
                                                 deliberate "check now", no read target)
  console      --requests calls per page, one keep-alive client per account with its
               session cookie, one after the other:
                 GET /admin                      (operator: the dashboard)
                 GET /admin/people?q=            (operator: search, a login prefix)
                 GET /admin/people/{login}       (operator: a certificate holder's page)
                 GET /admin/certificates/{serial} (operator)
                 GET /admin/audit                (auditor: the newest 50 records, and
                                                 the count of all)
                 GET /admin/requests             (auditor: the requests waiting)
  invitations  one POST /api/v1/invitations with every invitee's login; the time of
               the call, how many it reports invited and queued, how many mails the
               SMTP sink got by the end of the call and in all (the server's outbox
               sends them; the benchmark waits --mail-wait seconds, 90, for them).

Each line gives p50, p95 and max and whether the p95 target is met.

    python -m benchmarks.bench_api                 # 100,000 certificates, 10,000 invitees
    python -m benchmarks.bench_api --quick         # 20,000 certificates, 2,000 invitees
    python -m benchmarks.bench_api --postgres

Targets: API reads and console pages with 100,000 certificates stored p95 <= 100 ms;
invitations for 10,000 people in one call <= 30 s.
"""

from __future__ import annotations

import argparse
import base64
import csv
import http.client
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks import load_scale
from benchmarks.bench_ocsp import server
from benchmarks.bench_portal import summary_ms
from benchmarks.soak_cluster import Mail
from mailpki.auth import totp

TARGET_READ_P95_MS = 100.0
TARGET_INVITE_S = 30.0
PREFIX = "/api/v1"
HOLDERS = 1_000  # directory people whose mail is a loaded certificate's (the person pages)
PASSWORD = "Bench-Console-Password-14"
_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
_ALERT_RE = re.compile(r'role="alert"[^>]*>([^<]*)<')


def cli(home: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "mailpki", *args, "--home", str(home)]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"mailpki {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


class Client:
    """One keep-alive connection; a bearer token (the API) or a session cookie (the
    console), which it keeps as the server sets it."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, url: str, data: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, bytes, float, http.client.HTTPResponse]:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        t0 = time.perf_counter()
        try:
            self.conn.request(method, url, body=data, headers=headers)
            resp = self.conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected):
            # uvicorn closes a keep-alive connection idle for 5 s: once more, on a new one.
            self.conn.close()
            t0 = time.perf_counter()
            self.conn.request(method, url, body=data, headers=headers)
            resp = self.conn.getresponse()
        raw = resp.read()
        seconds = time.perf_counter() - t0
        for header in resp.msg.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                if morsel.value and morsel["max-age"] not in ("0", 0):
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return resp.status, raw, seconds, resp

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
        """An API call: JSON in, JSON (or, for PEM, the first bytes) out."""
        data = None if body is None else json.dumps(body).encode()
        status, raw, seconds, _ = self.request(
            method, PREFIX + path, data, "application/json" if data is not None else None
        )
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw[:300]
        return status, parsed, seconds

    def page(self, path: str) -> tuple[int, str, float]:
        """A console page: its HTML."""
        status, raw, seconds, _ = self.request("GET", path)
        return status, raw.decode("utf-8", errors="replace"), seconds

    def close(self) -> None:
        self.conn.close()


def set_up(home: Path, workdir: Path, invitees: int, holders: int, mail_port: int) -> None:
    people_csv = workdir / "people.csv"
    with people_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["login", "mail", "name", "given_name", "surname", "site", "enabled"])
        for i in range(invitees):
            writer.writerow([
                f"E{i:05d}", f"invitee{i:05d}@{common.DOMAIN}", f"Invitee Person{i}",
                "Invitee", f"Person{i}", "HQ", "true",
            ])  # fmt: skip
        for i in range(holders):  # the people of the first loaded certificates
            writer.writerow([
                f"H{i:05d}", f"user{i:08d}@{load_scale.MAIL_DOMAIN}", f"Holder Person{i}",
                "Holder", f"Person{i}", "HQ", "true",
            ])  # fmt: skip
    cli(home, "directory", "import", str(people_csv))
    for key, value in (
        ("smtp.host", "127.0.0.1"),
        ("smtp.port", str(mail_port)),
        ("api.rate_per_minute", "1000000"),
        ("keymanager.pool_size", "0"),  # no key-pool refill competing with the timing
    ):
        cli(home, "config", "set", key, value)


def queue_requests(home: Path, count: int) -> None:
    """`count` holders' enrollment requests wait for an officer: queued by the approval
    queue itself (audited), with automatic approval off for these calls only."""
    from dataclasses import replace

    from mailpki.enrollment.requests import ApprovalQueue, RequestQueued
    from mailpki.instance.instance import Instance

    instance = Instance.open(home)
    try:
        queue = ApprovalQueue(
            instance.db, instance.audit, replace(instance.approval_rules, auto=False)
        )
        for i in range(count):
            entry = instance.directories.find_by_login(f"H{i:05d}")
            if entry is None:
                raise SystemExit(f"H{i:05d} is not in the directory")
            try:
                queue.authorize(entry, actor="bench")
            except RequestQueued:
                pass
            else:
                raise SystemExit(f"the request of H{i:05d} was approved, not queued")
        instance.seal()
    finally:
        instance.close()


def token(home: Path, name: str, role: str) -> str:
    return cli(home, "api-token", "create", "--name", name, "--role", role).strip().splitlines()[-1]


def console_account(home: Path, workdir: Path, login: str, role: str) -> bytes:
    """`mailpki operator add`; the TOTP secret read back from the otpauth:// URI it prints."""
    password_file = workdir / f"{login}.pw"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    out = cli(home, "operator", "add", login, "--role", role, "--password-file", str(password_file))
    uri = next(line for line in out.splitlines() if line.startswith("otpauth://"))
    b32 = parse_qs(urlsplit(uri).query)["secret"][0]
    return base64.b32decode(b32 + "=" * (-len(b32) % 8))


def console_logon(port: int, login: str, secret: bytes) -> Client:
    """A console session as a person gets one: the logon page (its CSRF token and the
    pre-logon cookie), then POST /admin/logon with login, password and the current code."""
    client = Client(port)
    status, html, _ = client.page("/admin")
    found = _CSRF_RE.search(html)
    if status != 200 or found is None or 'action="/admin/logon"' not in html:
        raise SystemExit(f"GET /admin before logon: HTTP {status}, no local-operator form")
    if time.time() % totp.STEP_SECONDS > totp.STEP_SECONDS - 2:  # not at the end of a step
        time.sleep(totp.STEP_SECONDS - time.time() % totp.STEP_SECONDS + 0.1)
    form = urlencode({
        "csrf": found.group(1), "login": login, "secret": PASSWORD,
        "code": totp.totp_code(secret, time.time()),
    }).encode()  # fmt: skip
    status, raw, _, resp = client.request(
        "POST", "/admin/logon", form, "application/x-www-form-urlencoded"
    )
    if status != 303 or resp.getheader("Location") != "/admin":
        alert = _ALERT_RE.search(raw.decode("utf-8", errors="replace"))
        raise SystemExit(f"console logon of {login}: HTTP {status}: {alert and alert.group(1)}")
    status, html, _ = client.page("/admin")
    if status != 200 or "Log out" not in html:
        raise SystemExit(f"GET /admin after the logon of {login}: HTTP {status}")
    return client


Case = tuple[str, Client, Callable[[], str]]


def timed(
    cases: list[Case], count: int, call: Callable[[Client, str], tuple[int, Any, float]]
) -> dict[str, dict[str, Any]]:
    """`count` calls of each case, one after the other; a line each (a `fresh` case has
    no target)."""
    results: dict[str, dict[str, Any]] = {}
    for name, client, path_of in cases:
        latencies = []
        for _ in range(count):
            path = path_of()
            status, body, seconds = call(client, path)
            if status != 200:
                raise SystemExit(f"{path}: HTTP {status}: {str(body)[:500]}")
            latencies.append(seconds)
        r = results[name] = {"calls": len(latencies), **summary_ms(latencies)}
        verdict = (
            "no target"
            if "fresh" in name
            else ("target met" if r["p95_ms"] <= TARGET_READ_P95_MS else "TARGET MISSED")
        )
        common.log(
            f"  {name:34} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
            f"max {r['max_ms']:8.1f} ms  {verdict}"
        )
    return results


def api_call(client: Client, path: str) -> tuple[int, Any, float]:
    return client.call("GET", path)


def console_call(client: Client, path: str) -> tuple[int, Any, float]:
    status, html, seconds = client.page(path)
    if status == 200 and "Log out" not in html:  # a logon page, not the console's
        return 401, html[:300], seconds
    return status, html[:300], seconds


def sample_serials(client: Client) -> list[str]:
    status, page, _ = client.call("GET", "/certificates?limit=500")
    if status != 200:
        raise SystemExit(f"GET /certificates: HTTP {status}: {page}")
    return [item["serial"] for item in page["items"]]


def reads(
    operator: Client,
    auditor: Client,
    count: int,
    audit_count: int,
    certificates: int,
    invitees: int,
) -> dict[str, dict[str, Any]]:
    rng = random.Random(14)
    serials = sample_serials(operator)
    cases: list[Case] = [
        ("GET /people?q=", operator, lambda: f"/people?q=E{rng.randrange(invitees):05d}"[:-1]),
        (
            "GET /certificates?email=",
            operator,
            lambda: f"/certificates?email=user{rng.randrange(certificates):08d}@{common.DOMAIN}",
        ),
        ("GET /certificates", operator, lambda: "/certificates"),
        ("GET /certificates/{serial}", operator, lambda: f"/certificates/{rng.choice(serials)}"),
        (
            "GET /certificates/{serial}/pem",
            operator,
            lambda: f"/certificates/{rng.choice(serials)}/pem",
        ),
        ("GET /requests", auditor, lambda: "/requests"),
        ("GET /recovery/report", auditor, lambda: "/recovery/report"),
        # The check of the whole log, shown while at most 5 minutes old (the first call
        # of a run makes it) ...
        ("GET /audit/status", auditor, lambda: "/audit/status"),
    ]
    results = timed(cases, count, api_call)
    # ... and made on every call: it reads the whole log, so fewer calls
    # (--audit-requests); an operator's deliberate "check now", not a read target.
    fresh: list[Case] = [
        ("GET /audit/status?fresh=true", auditor, lambda: "/audit/status?fresh=true")
    ]
    return results | timed(fresh, audit_count, api_call)


def console(
    operator: Client, auditor: Client, serials: list[str], count: int, holders: int
) -> dict[str, dict[str, Any]]:
    rng = random.Random(1414)
    cases: list[Case] = [
        ("GET /admin", operator, lambda: "/admin"),
        (
            "GET /admin/people?q=",
            operator,
            lambda: f"/admin/people?q=H{rng.randrange(holders):05d}"[:-1],
        ),
        (
            "GET /admin/people/{login}",
            operator,
            lambda: f"/admin/people/H{rng.randrange(holders):05d}",
        ),
        (
            "GET /admin/certificates/{serial}",
            operator,
            lambda: f"/admin/certificates/{rng.choice(serials)}",
        ),
        ("GET /admin/audit", auditor, lambda: "/admin/audit"),
        ("GET /admin/requests", auditor, lambda: "/admin/requests"),
    ]
    return timed(cases, count, console_call)


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
    parser.add_argument(
        "--requests", type=int, default=200, help="calls per read endpoint and console page"
    )
    parser.add_argument(
        "--audit-requests", type=int, default=10, help="calls of GET /audit/status?fresh=true"
    )
    parser.add_argument(
        "--pending-requests",
        type=int,
        default=200,
        help=f"enrollment requests waiting for an officer (at most {HOLDERS:,})",
    )
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
        or not 0 <= args.pending_requests <= HOLDERS
    ):
        parser.error(
            "--certificates, --invitees (at most 50,000), --requests must be >= 1; "
            f"--pending-requests from 0 to {HOLDERS:,}"
        )
    holders = min(HOLDERS, args.certificates)
    pending = min(args.pending_requests, holders)
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
            set_up(home, workdir, args.invitees, holders, mail.port)
            loaded = load_scale.load(
                home, args.certificates, args.certificates // 10, args.workers, 5_000
            )
            common.log(f"loaded {loaded['loaded']:,} certificates in {loaded['seconds']} s")
            queue_requests(home, pending)
            operator_token = token(home, "bench-operator", "operator")
            auditor_token = token(home, "bench-auditor", "auditor")
            operator_secret = console_account(home, workdir, "bench-operator", "operator")
            auditor_secret = console_account(home, workdir, "bench-auditor", "auditor")
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
                common.log(f"console ({args.requests} calls per page):")
                sessions = (
                    console_logon(port, "bench-operator", operator_secret),
                    console_logon(port, "bench-auditor", auditor_secret),
                )
                result["console"] = console(
                    *sessions, sample_serials(operator), args.requests, holders
                )
                for session in sessions:
                    session.close()
                result["invitations"] = invitations(operator, args.invitees, mail, args.mail_wait)
                operator.close()
                auditor.close()
        finally:
            mail.stop()
    result.update(
        database=common.database_kind(url),
        certificates=args.certificates,
        invitees=args.invitees,
        holders=holders,
        pending_requests=pending,
    )
    timed_reads = {
        name: r for name, r in (result["reads"] | result["console"]).items() if "fresh" not in name
    }
    worst = max(r["p95_ms"] for r in timed_reads.values())
    result["targets"] = [
        *(
            common.target(f"{name} p95", r["p95_ms"], "ms", TARGET_READ_P95_MS, "<=")
            for name, r in timed_reads.items()
        ),
        common.target(
            f"invitations for {args.invitees} people in one call",
            result["invitations"]["seconds"],
            "s",
            TARGET_INVITE_S,
            "<=",
        ),
    ]
    common.log(
        f"worst p95 of API reads and console pages: {worst} ms (target {TARGET_READ_P95_MS} ms)"
    )
    common.emit(result)


if __name__ == "__main__":
    main()
