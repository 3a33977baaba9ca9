"""The enrollment portal over HTTP from the real server (`mailpki serve [--workers N]`).

A throwaway instance (P-256 CA, SQLite unless --database/--postgres) gets people in
its embedded directory and HR PINs for them (`mailpki directory import`, `mailpki pins
import`); the key pool is filled beforehand (`mailpki keys pool fill`) so it stays warm
for the whole run. The server runs as a subprocess on 127.0.0.1; the clients are this
process (threads) and, for the page load, a few forked processes, on the same cores.

  enroll   --people (50) people log on with their PIN first (not timed), then all of
           them POST the form (accept) at once; the time from sending the POST to the
           full response holding the `/download/<handle>` link is one latency.
           Twice: with a generated password, then with a chosen one (another 50
           people; the PKCS#12 KDF runs on a password of different length). After
           each round a few downloads are fetched and checked: 200,
           application/x-pkcs12, and the PKCS#12 opens with its password.
  pages    --clients (20) keep-alive clients request one page for --duration
           seconds (15; --quick: 5), page after page:
             GET /                   a first visit (no cookie: a new session each time)
             GET /tutorial           public page
             GET /static/portal.css  static file
             GET /form               a logged-on session (one per client)
           -> requests/s and latencies per page.

Logon rate limit: the portal allows 20 logons a minute per client address, and every
client here is 127.0.0.1. uvicorn trusts X-Forwarded-For from 127.0.0.1 by default
(proxy_headers on, forwarded_allow_ips "127.0.0.1", as if behind a local reverse
proxy), so each person logs on with its own X-Forwarded-For address (10.77.x.y); the
server is started with FORWARDED_ALLOW_IPS=127.0.0.1 to pin that. No product setting
is changed.

    python -m benchmarks.bench_portal                  # 1 server worker, 15 s per page
    python -m benchmarks.bench_portal --workers 2 --quick
    python -m benchmarks.bench_portal --people 20 --clients 10 --duration 5

Targets: 50 concurrent enrollments (warm pool) p95 <= 300 ms; portal pages p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import html
import http.client
import multiprocessing as mp
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks.bench_ocsp import server, tree_cpu_seconds

TARGET_ENROLL_P95_MS = 300.0
TARGET_PAGE_P95_MS = 50.0
CHOSEN_PASSWORD = "Corr3ct-Horse-Battery"  # a benchmark's test password
PKCS12 = "application/x-pkcs12"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
# The result page links /fetch/HANDLE (a page that starts the download); the file itself
# is /download/HANDLE: the group is the handle.
LINK_RE = re.compile(r'href="/(?:fetch|download)/([A-Za-z0-9_-]+)"')
PASSWORD_RE = re.compile(r'<code id="generated-password"[^>]*>([^<]*)</code>')
PAGES = (
    ("GET / (new visitor)", "/", False),
    ("GET /tutorial", "/tutorial", False),
    ("GET /static/portal.css", "/static/portal.css", False),
    ("GET /form (logged on)", "/form", True),
)


# -- a minimal browser ------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Browser:
    """One keep-alive connection and a cookie jar; every request carries `forwarded_for`
    as X-Forwarded-For (the client address the server sees)."""

    port: int
    forwarded_for: str
    cookies: dict[str, str] = field(default_factory=dict)
    _conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Reply:
        headers = {"X-Forwarded-For": self.forwarded_for}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected):
                self.close()
                if attempt == 2 or method != "GET":
                    raise
        for value in resp.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(value).items():
                self.cookies[name] = morsel.value
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    def reconnect(self) -> None:
        """A new, connected socket (uvicorn drops keep-alive connections idle for 5 s)."""
        self.close()
        self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self._conn.connect()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def csrf_of(reply: Reply, what: str) -> str:
    match = CSRF_RE.search(reply.text)
    if reply.status != 200 or match is None:
        raise SystemExit(f"{what}: HTTP {reply.status}, no csrf field:\n{reply.text[:500]}")
    return html.unescape(match.group(1))


@dataclass
class Person:
    index: int
    login: str
    mail: str
    pin: str

    @property
    def address(self) -> str:
        return f"10.77.{self.index // 250}.{self.index % 250 + 1}"


def people(count: int) -> list[Person]:
    return [
        Person(i, f"E{i:05d}", f"user{i}@{common.DOMAIN}", f"{(10_000_019 + i * 7_919):08d}")
        for i in range(count)
    ]


def log_on(port: int, person: Person) -> tuple[Browser, str]:
    """GET / -> POST /logon (PIN) -> GET /form; the browser and the form's CSRF token."""
    browser = Browser(port, person.address)
    csrf = csrf_of(browser.request("GET", "/"), "GET /")
    reply = browser.request(
        "POST",
        "/logon",
        {"csrf": csrf, "method": "pin", "login": person.login, "secret": person.pin},
    )
    if reply.status != 303 or reply.headers.get("location") != "/form":
        raise SystemExit(
            f"logon of {person.login}: HTTP {reply.status} (429 means the per-address rate "
            f"limit: X-Forwarded-For was not trusted):\n{reply.text[:500]}"
        )
    return browser, csrf_of(browser.request("GET", "/form"), "GET /form")


# -- setting up -------------------------------------------------------------------------------


def cli(home: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "mailpki", *args, "--home", str(home)]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"mailpki {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def pool_count(home: Path) -> int:
    match = re.search(r"(\d+) keys? in the pool", cli(home, "keys", "pool", "status"))
    return int(match.group(1)) if match else -1


def set_up(home: Path, workdir: Path, everyone: list[Person], pool_target: int, fill: int) -> str:
    """Directory, PINs, a full key pool; the subscribers' key type."""
    people_csv, pins_csv = workdir / "people.csv", workdir / "pins.csv"
    with people_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["login", "mail", "name", "given_name", "surname", "site", "enabled"])
        for p in everyone:
            writer.writerow(
                [p.login, p.mail, f"Bench User{p.index}", "Bench", f"User{p.index}", "HQ", "true"]
            )
    with pins_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["employee_id", "mail", "name", "pin"])
        for p in everyone:
            writer.writerow([p.login, p.mail, f"Bench User{p.index}", p.pin])
    common.log(f"directory import, pins import: {len(everyone)} people")
    cli(home, "directory", "import", str(people_csv))
    cli(home, "pins", "import", str(pins_csv))
    pins_csv.unlink()
    # The server's housekeeping tops the pool up to keymanager.pool_size: the pool is
    # filled beyond it by what the run takes, so no refill competes with the timing.
    cli(home, "config", "set", "keymanager.pool_size", str(pool_target))
    t0 = time.monotonic()
    out = cli(home, "keys", "pool", "fill", "--size", str(fill))
    key_type = re.search(r"(\w+) keys added", out)
    common.log(f"key pool filled to {fill} in {time.monotonic() - t0:.1f} s")
    return key_type.group(1) if key_type else "?"


def settle(pid: int, *, quiet: float = 0.05, most: float = 30.0) -> float:
    """Wait until the server is idle (background notices, publishing); seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < most:
        before = tree_cpu_seconds(pid)
        time.sleep(0.5)
        if tree_cpu_seconds(pid) - before < quiet:
            break
    return time.monotonic() - t0


# -- measuring --------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(values, 50) * 1000, 1),
        "p95_ms": round(pct(values, 95) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
    }


def enroll_round(
    sessions: list[tuple[Browser, str, Person]], choose: bool, server_pid: int
) -> dict[str, Any]:
    """All sessions POST /form at once; latencies and a checked download."""
    form = {"mode": "single", "accept": "on"}
    if choose:
        form |= {"password_choice": "choose", "password": CHOSEN_PASSWORD}
        form["confirm"] = CHOSEN_PASSWORD
    else:
        form["password_choice"] = "generate"
    barrier = threading.Barrier(len(sessions) + 1)
    latencies: list[float] = [0.0] * len(sessions)
    replies: list[Reply | Exception | None] = [None] * len(sessions)

    def one(i: int) -> None:
        browser, csrf, _ = sessions[i]
        browser.reconnect()
        barrier.wait()
        t0 = time.perf_counter()
        try:
            replies[i] = browser.request("POST", "/form", {"csrf": csrf, **form})
        except (OSError, http.client.HTTPException) as exc:
            replies[i] = exc
        latencies[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    cpu0 = tree_cpu_seconds(server_pid)
    barrier.wait()
    t0 = time.monotonic()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - t0
    cpu = tree_cpu_seconds(server_pid) - cpu0

    links: list[tuple[int, str, str]] = []
    for i, reply in enumerate(replies):
        if not isinstance(reply, Reply):
            raise SystemExit(f"POST /form of {sessions[i][2].login}: {reply!r}")
        found = LINK_RE.search(reply.text)
        if reply.status != 200 or found is None:
            raise SystemExit(
                f"POST /form of {sessions[i][2].login}: HTTP {reply.status}, no download link:\n"
                f"{reply.text[:800]}"
            )
        generated = PASSWORD_RE.search(reply.text)
        password = CHOSEN_PASSWORD if choose else generated and html.unescape(generated[1])
        if password is None:
            raise SystemExit("the page shows no generated password")
        links.append((i, f"/download/{found.group(1)}", password))
    checks = [
        check_download(sessions[i], link, pw)
        for i, link, pw in sorted({links[0], links[len(links) // 2], links[-1]})
    ]
    return {
        "enrollments": len(sessions),
        "password": "chosen" if choose else "generated",
        **summary_ms(latencies),
        "mean_ms": round(sum(latencies) / len(latencies) * 1000, 1),
        "wall_s": round(wall, 2),
        "enrollments_per_s": round(len(sessions) / wall, 1),
        "server_cpu_s": round(cpu, 2),
        "server_cpu_ms_per_enrollment": round(cpu / len(sessions) * 1000, 1),
        "downloads_checked": checks,
    }


def check_download(session: tuple[Browser, str, Person], link: str, password: str) -> str:
    from cryptography.hazmat.primitives.serialization import pkcs12

    browser, _, person = session
    reply = browser.request("GET", link)
    ctype = reply.headers.get("content-type", "")
    if reply.status != 200 or ctype != PKCS12:
        raise SystemExit(f"GET {link}: HTTP {reply.status} {ctype}, not a PKCS#12")
    loaded = pkcs12.load_pkcs12(reply.body, password.encode())
    if loaded.key is None or loaded.cert is None:
        raise SystemExit(f"GET {link}: the PKCS#12 holds no key or no certificate")
    cert = loaded.cert.certificate
    if person.mail not in str(cert.subject) + str(cert.extensions):
        raise SystemExit(f"GET {link}: the certificate is not {person.mail}'s")
    again = browser.request("GET", link).status
    if again != 404:
        raise SystemExit(f"GET {link} a second time: HTTP {again}, not 404")
    return (
        f"{person.login}: 200 {ctype}, {len(reply.body)} bytes, opens with the password, "
        f"serial {cert.serial_number:x}; second GET 404"
    )


def _page_client(
    port: int,
    path: str,
    cookies: list[str | None],
    index: int,
    seconds: float,
    start_at: float,
    out: Any,
) -> None:
    """One load process: a thread per cookie (None: no cookie), keep-alive, for `seconds`."""
    results: list[tuple[list[float], Counter[str]]] = []
    lock = threading.Lock()

    def run(cookie: str | None, n: int) -> None:
        headers = {"X-Forwarded-For": f"10.78.{index}.{n + 1}"}
        if cookie is not None:
            headers["Cookie"] = cookie
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        lat: list[float] = []
        bad: Counter[str] = Counter()  # failures by status or exception
        while time.time() < start_at:
            time.sleep(0.001)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:
                bad[type(exc).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            if resp.status == 200:
                lat.append(time.perf_counter() - t0)
            else:
                bad[f"HTTP {resp.status}"] += 1
        conn.close()
        with lock:
            results.append((lat, bad))

    threads = [threading.Thread(target=run, args=(c, n)) for n, c in enumerate(cookies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(([x for lat, _ in results for x in lat], sum((b for _, b in results), Counter())))


def page_load(
    port: int,
    label: str,
    path: str,
    cookies: list[str | None],
    processes: int,
    seconds: float,
    server_pid: int,
) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.5
    procs = [
        ctx.Process(
            target=_page_client,
            daemon=True,
            args=(port, path, cookies[i::processes], i, seconds, start_at, out),
        )
        for i in range(processes)
    ]
    with common.Progress(f"{label}: {len(cookies)} clients for {seconds:g} s", None):
        cpu0 = tree_cpu_seconds(server_pid)
        for proc in procs:
            proc.start()
        parts = [out.get(timeout=seconds + 120) for _ in procs]
        cpu = tree_cpu_seconds(server_pid) - cpu0
        for proc in procs:
            proc.join(timeout=10)
    latencies = [x for lat, _ in parts for x in lat]
    bad: Counter[str] = sum((b for _, b in parts), Counter())
    if not latencies:
        raise SystemExit(f"{label}: no successful response (failures: {dict(bad)})")
    result = {
        "page": path,
        "clients": len(cookies),
        "seconds": seconds,
        "requests": len(latencies),
        "failed": sum(bad.values()),
        "failures": dict(bad),
        "rps": round(len(latencies) / seconds, 1),
        **summary_ms(latencies),
        "server_cpu_cores": round(cpu / (seconds + 0.5), 2),
    }
    common.log(f"  {label}: {result}")
    return result


# -- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def logged_on(port: int, who: list[Person]) -> Iterator[list[tuple[Browser, str, Person]]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        sessions = [
            (*done, p)
            for done, p in zip(pool.map(lambda p: log_on(port, p), who), who, strict=True)
        ]
    try:
        yield sessions
    finally:
        for browser, _, _ in sessions:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=1, help="mailpki serve --workers (1)")
    parser.add_argument("--people", type=int, default=50, help="concurrent enrollments (50)")
    parser.add_argument("--clients", type=int, default=20, help="page-load clients (20)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per page (15)")
    parser.add_argument("--quick", action="store_true", help="5 s per page")
    parser.add_argument("--ca-key-type", choices=("p256", "rsa3072"), default="p256")
    common.add_database_options(parser)
    args = common.parse_args(parser)
    if args.duration is None:
        args.duration = 5.0 if args.quick else 15.0
    if args.workers < 1 or args.people < 1 or args.clients < 1:
        parser.error("--workers, --people and --clients must be at least 1")
    n = args.people
    everyone = people(2 * n + args.clients)
    generated_people, chosen_people = everyone[:n], everyone[n : 2 * n]
    page_people = everyone[2 * n :]
    # Pin the trust in X-Forwarded-For from 127.0.0.1 (uvicorn's default) for the server.
    os.environ["FORWARDED_ALLOW_IPS"] = "127.0.0.1"

    with (
        common.temp_dir("mailpki-bench-portal-") as workdir,
        common.database_for(args, workdir) as database_url,
    ):
        home = workdir / "home"
        db_kind = common.database_kind(database_url)
        common.log(f"new instance in {home} ({db_kind}, {args.ca_key_type} CA)")
        common.create_instance(home, ca_key_type=args.ca_key_type, database_url=database_url)
        key_type = set_up(home, workdir, everyone, pool_target=n, fill=3 * n)
        pool_before = pool_count(home)
        port = common.free_port()
        common.log(f"mailpki serve --workers {args.workers} on 127.0.0.1:{port}")
        with server(home, port, args.workers, workdir / "server.log") as proc:
            settle(proc.pid)
            t0 = time.monotonic()
            with logged_on(port, generated_people + chosen_people + page_people) as sessions:
                logon_s = time.monotonic() - t0
                common.log(
                    f"{len(sessions)} logons (PIN, distinct X-Forwarded-For) in {logon_s:.1f} s"
                )
                rounds = {}
                for choose in (False, True):
                    which = sessions[n : 2 * n] if choose else sessions[:n]
                    label = "chosen" if choose else "generated"
                    common.log(f"{n} concurrent enrollments ({label} password) ...")
                    rounds[label] = enroll_round(which, choose, proc.pid)
                    common.log(f"  {rounds[label]}")
                    settle(proc.pid)
                form_cookies: list[str | None] = [
                    "; ".join(f"{k}={v}" for k, v in b.cookies.items())
                    for b, _, _ in sessions[2 * n :]
                ]
                processes = min(os.cpu_count() or 1, args.clients)
                pages = {}
                for label, path, logged in PAGES:
                    no_cookies: list[str | None] = [None] * args.clients
                    cookies = form_cookies if logged else no_cookies
                    pages[label] = page_load(
                        port, label, path, cookies, processes, args.duration, proc.pid
                    )
                    settle(proc.pid)
        pool_after = pool_count(home)
        server_log = (workdir / "server.log").read_text(errors="replace")

    # The last line of each traceback in the server log: what went wrong, how often.
    errors = Counter(
        line
        for line, after in zip(
            server_log.splitlines(), [*server_log.splitlines()[1:], ""], strict=True
        )
        if line
        and not line.startswith((" ", "Traceback", "ERROR:", "During", "The above"))
        and ("Error" in line or "Exception" in line)
        and not after.startswith(" ")
    )
    targets = []
    for label, r in rounds.items():
        targets.append(
            common.target(
                f"{n} concurrent enrollments, {label} password, {args.workers} worker(s): p95 "
                f"(p50 {r['p50_ms']:.0f}, max {r['max_ms']:.0f} ms)",
                r["p95_ms"],
                "ms",
                TARGET_ENROLL_P95_MS,
                "<=",
            )
        )
    for label, r in pages.items():
        failed = f", {r['failed']:,} FAILED" if r["failed"] else ""
        page_target = common.target(
            f"{label}, {args.clients} clients: p95 ({r['rps']:,.0f} req/s{failed})",
            r["p95_ms"],
            "ms",
            TARGET_PAGE_P95_MS,
            "<=",
        )
        if r["failed"]:  # the p95 is of the successful requests only
            page_target["ok"] = False
        targets.append(page_target)
    common.emit(
        {
            "benchmark": "bench_portal",
            "server_workers": args.workers,
            "database": db_kind,
            "ca_key_type": args.ca_key_type,
            "key_type": key_type,
            "machine": common.machine(),
            "note": "server and clients share the machine's cores",
            "logon_rate_limit": "each person logs on with its own X-Forwarded-For "
            "(uvicorn trusts it from 127.0.0.1)",
            "key_pool": {
                "before": pool_before,
                "after": pool_after,
                "used": pool_before - pool_after,
            },
            "logons": {"count": len(everyone), "seconds": round(logon_s, 1)},
            "enroll": rounds,
            "pages": pages,
            "server_log_errors": dict(errors.most_common(5)),
            "targets": targets,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
