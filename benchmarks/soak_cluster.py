"""Several nodes on one PostgreSQL behind HAProxy, with faults, then the books are checked.

    python -m benchmarks.soak_cluster                         # 3 nodes, 300 enrollments
    python -m benchmarks.soak_cluster --nodes 3 --enrollments 1000 --ocsp 20000

What runs (all on this machine, loopback only):
- a throwaway PostgreSQL primary and a streaming replica (pg_basebackup -R) that the
  nodes read from (`database.read_url`); an instance on them (P-256 CA, P-256 subscriber
  keys, key pool filled) with HR PINs for its people;
- a throwaway OpenLDAP slapd (10,000 people): the people's entries (the form is filled
  from it) and where their certificates are published;
- an SMTP server (aiosmtpd) the instance mails through;
- `--nodes` `mailpki serve` processes and HAProxy (Debian's) in front of them, round
  robin, health-checked on /readyz;
- `--enrollments` portal enrollments (PIN logon, form, one-time download) by `--clients`
  threads through HAProxy, and `--ocsp` OCSP GETs beside them. A person who gets a page
  that says to try again (or whose connection is cut) comes back after `--retry-pause`
  seconds, up to `--tries` times; the last attempt's ending is what counts.

The faults, while that load runs: at a quarter of the enrollments one node is killed with
SIGKILL; at 35 % the replica is stopped for `--replica-outage` seconds (30); at half,
PostgreSQL's primary is restarted; from 60 % the SMTP server and slapd are down for
`--mail-outage` and `--directory-outage` seconds (60 each).

Afterwards: every enrollment either completed (its PKCS#12 downloaded) or was refused with
a page that says why (none half-done: every issued certificate was downloaded, or revoked
by the housekeeping of a surviving node), no serial twice, every escrow notice delivered
exactly once once the mail server is back, every valid certificate published to its
person's entry in slapd and no revoked one left there (none lost to the outage), no
background job taken over while its holder's lease still ran (the lease table, sampled
every 0.2 s through the run), and `mailpki audit verify` passes. The last stdout
line is JSON; the exit code is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks.bench_portal import LINK_RE, PKCS12, Browser, Person, csrf_of

HAPROXY_CONFIG = """\
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 2
    option redispatch
frontend portal
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers}
"""


@dataclass
class Outcome:
    completed: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    # Connections the killed node dropped mid-request (a browser shows its own error).
    interrupted: int = 0
    broken: Counter[str] = field(default_factory=Counter)
    # Attempts refused or cut off that the person tried again after a pause.
    retried: Counter[str] = field(default_factory=Counter)
    serials: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Postgres:
    """A cluster in a temp folder, run as the postgres user when we are root."""

    def __init__(self, workdir: Path) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pg-", dir=workdir))
        self.data = self.base / "data"
        self.port = common.free_port()
        if os.geteuid() == 0:
            shutil.chown(workdir, "postgres")
            shutil.chown(self.base, "postgres")

    def _run(self, *args: str) -> None:
        user = "postgres" if os.geteuid() == 0 else None
        subprocess.run(args, user=user, check=True, capture_output=True, cwd=self.base)

    def start(self) -> str:
        if not self.data.exists():
            self._run(
                str(common.PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
            )  # fmt: skip
        self._run(
            str(common.PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"),
            "-o", f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -F "
            "-c max_connections=300", "-w", "start",
        )  # fmt: skip
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def restart(self) -> None:
        # -l: the restarted server must not inherit our pipes (communicate() would wait forever).
        self._run(
            str(common.PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "restart",
            "-l", str(self.base / "log"),
            "-o", f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -F "
            "-c max_connections=300",
        )  # fmt: skip

    def stop(self) -> None:
        for data in (self.replica_data, self.data):
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.CalledProcessError):
                    self._run(
                        str(common.PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"
                    )

    @property
    def replica_data(self) -> Path:
        return self.base / "replica"

    def add_replica(self) -> str:
        """A streaming replica of the primary (pg_basebackup -R), started; its URL."""
        self.replica_port = common.free_port()
        self._run(
            str(common.PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "postgres", "-D", str(self.replica_data), "-R", "-X", "stream", "--no-sync",
        )  # fmt: skip
        self.start_replica()
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.replica_port}/postgres"

    def start_replica(self) -> None:
        self._run(
            str(common.PG_BIN / "pg_ctl"), "-D", str(self.replica_data), "-w", "start",
            "-l", str(self.base / "replica.log"),
            "-o", f"-p {self.replica_port} -k {self.base} -c listen_addresses=127.0.0.1 -F "
            "-c max_connections=300",
        )  # fmt: skip

    def stop_replica(self) -> None:
        self._run(
            str(common.PG_BIN / "pg_ctl"), "-D", str(self.replica_data), "-m", "fast", "-w", "stop"
        )


class Mail:
    """aiosmtpd on a fixed port that can go down and come back."""

    def __init__(self) -> None:
        self.port = common.free_port()
        self.received: list[bytes] = []
        self._controller: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._controller is None:
                self._start()

    def _start(self) -> None:
        from aiosmtpd.controller import Controller

        received = self.received

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                received.append(bytes(envelope.content))
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        with self._lock:
            if self._controller is not None:
                self._controller.stop()
                self._controller = None


@contextlib.contextmanager
def nodes(
    home: Path, count: int, workdir: Path
) -> Iterator[list[tuple[int, subprocess.Popen[bytes]]]]:
    env = {**os.environ, "FORWARDED_ALLOW_IPS": "127.0.0.1"}
    started = []
    try:
        for index in range(count):
            port = common.free_port()
            log = (workdir / f"node{index}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "mailpki", "serve", "--home", str(home), "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip
            started.append((port, proc))
        for port, proc in started:
            _wait_ready(port, proc)
        yield started
    finally:
        for _, proc in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"node on {port} exited {proc.returncode}")
        with contextlib.suppress(OSError):
            if Browser(port, "127.0.0.1").request("GET", "/readyz").status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"node on {port} did not become ready")


@contextlib.contextmanager
def haproxy(backends: list[int], workdir: Path) -> Iterator[int]:
    if shutil.which("haproxy") is None:
        raise SystemExit("haproxy is not installed (Debian: apt-get install haproxy)")
    port = common.free_port()
    servers = "\n".join(
        f"    server n{i} 127.0.0.1:{p} check inter 500ms fall 2 rise 2"
        for i, p in enumerate(backends)
    )
    config = workdir / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
    proc = subprocess.Popen(
        ["haproxy", "-f", str(config), "-db"],
        stdout=(workdir / "haproxy.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError):
                if Browser(port, "127.0.0.1").request("GET", "/healthz").status == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("haproxy did not start")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


@dataclass(frozen=True)
class Attempt:
    """How one enrollment attempt ended: completed, refused, interrupted or broken."""

    kind: str
    detail: str = ""
    serial: str | None = None


def enroll(browser: Browser, person: Person) -> Attempt:
    """Log on with the PIN (unless this browser's session already is: the PIN is spent at
    the first logon), accept the form, download once; how it ended."""
    try:
        form = browser.request("GET", "/form")
        if form.status == 303 and form.headers.get("location", "").endswith("/done"):
            # Made in an earlier attempt whose answer was lost: the downloads page has it.
            done = browser.request("GET", "/done")
            return _download(browser, done)
        if form.status != 200:  # not logged on yet (303 to /), or refused
            if form.status not in (302, 303):
                return _refusal("form page", form.status, form.text)
            first = browser.request("GET", "/")
            if first.status != 200:
                return _refusal("start", first.status, first.text)
            logon = browser.request(
                "POST", "/logon",
                {"csrf": csrf_of(first, "GET /"), "method": "pin", "login": person.login,
                 "secret": person.pin},
            )  # fmt: skip
            if logon.status != 303:
                return _refusal("logon", logon.status, logon.text)
            form = browser.request("GET", "/form")
            if form.status != 200:
                return _refusal("form page", form.status, form.text)
        done = browser.request(
            "POST", "/form",
            {"csrf": csrf_of(form, "GET /form"), "mode": "single", "accept": "on",
             "password_choice": "generate"},
        )  # fmt: skip
        return _download(browser, done)
    except (ConnectionError, http.client.RemoteDisconnected):
        return Attempt("interrupted", "connection dropped")
    except (OSError, SystemExit) as exc:
        return Attempt("broken", type(exc).__name__)


def _download(browser: Browser, done: Any) -> Attempt:
    """Fetch the one-time PKCS#12 the result page links to."""
    link = LINK_RE.search(done.text)
    if done.status != 200 or link is None:
        return _refusal("form", done.status, done.text)
    download = browser.request("GET", f"/download/{link.group(1)}")
    if download.status != 200 or download.headers.get("content-type", "") != PKCS12:
        return _refusal("download", download.status, download.text)
    serial = re.search(r"\b([0-9A-F]{20,40})\b", done.text)
    return Attempt("completed", serial=serial.group(1) if serial else None)


def enroll_as_a_person(
    port: int, person: Person, outcome: Outcome, tries: int, pause: float
) -> None:
    """Enroll; refused or cut off, come back after `pause` seconds in the same browser
    (its session cookie kept), as a person would after a page that says to try again, up
    to `tries` times; record the last attempt's ending."""
    browser = Browser(port, person.address)
    try:
        for attempt in range(1, tries + 1):
            ended = enroll(browser, person)
            if ended.kind in ("refused", "interrupted") and attempt < tries:
                with outcome.lock:
                    outcome.retried[f"{ended.kind}: {ended.detail}"] += 1
                browser.close()  # a new connection; the cookies stay
                time.sleep(pause)
                continue
            with outcome.lock:
                if ended.kind == "completed":
                    outcome.completed += 1
                    if ended.serial:
                        outcome.serials.append(ended.serial)
                elif ended.kind == "interrupted":
                    outcome.interrupted += 1
                else:
                    bucket = outcome.refused if ended.kind == "refused" else outcome.broken
                    bucket[ended.detail] += 1
            return
    finally:
        browser.close()


def _refusal(step: str, status: int, text: str) -> Attempt:
    """A refusal counts as clear when the page is a real page with a message on it. The
    proxy's own 502/504 means the node died under that very request: interrupted."""
    if status in (502, 504):
        return Attempt("interrupted", f"{step} {status}")
    # A clear refusal is a page that says why, with a status that is not a server fault.
    clear = status in (400, 401, 403, 409, 429, 503) and ("<h1" in text or "error" in text.lower())
    return Attempt("refused" if clear else "broken", f"{step} {status}")


def ocsp_load(port: int, requests: list[str], stop: threading.Event, counts: Counter[str]) -> None:
    browser = Browser(port, "127.0.0.1")
    index = 0
    while not stop.is_set() and index < len(requests):
        try:
            status = browser.request("GET", f"/ocsp/{requests[index]}").status
            counts["ok" if status == 200 else f"http {status}"] += 1
        except OSError:
            counts["connection error"] += 1
            browser.close()
        index += 1
    browser.close()


def soak_people(count: int) -> list[Person]:
    """The first `count` people of the throwaway slapd (uid userNNNNN, mail at example.com),
    each with an employee id and an HR PIN."""
    return [
        Person(i, f"E{i:05d}", f"user{i:05d}@example.com", f"{(10_000_019 + i * 7_919):08d}")
        for i in range(count)
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.fixtures.slapd import OPENLDAP_USERS, missing_slapd, running_slapd

    if args.enrollments > OPENLDAP_USERS:
        raise SystemExit(f"--enrollments ≤ {OPENLDAP_USERS:,} (the people in the slapd)")
    reason = missing_slapd()
    if reason is not None:
        raise SystemExit(f"cannot start slapd: {reason}")
    everyone = soak_people(args.enrollments)
    with common.temp_dir("mailpki-soak-") as workdir, running_slapd("openldap") as ldap:
        pg = Postgres(workdir)
        url = pg.start()
        read_url = pg.add_replica()
        mail = Mail()
        mail.start()
        faults: Faults | None = None
        try:
            home = workdir / "home"
            common.create_instance(home, ca_key_type="p256", database_url=url)
            for key, value in (
                ("database.read_url", read_url),
                ("keymanager.key_type", "p256"),
                ("smtp.host", "127.0.0.1"),
                ("smtp.port", str(mail.port)),
                ("approval.allowed_domains", "example.com"),
                # Short leases, so the survivors' housekeeping settles what the killed
                # node left half-done within the run, not ten minutes later.
                ("keymanager.delivery_lease_seconds", "20"),
                ("portal.download_minutes", "1"),
            ):
                _cli(home, "config", "set", key, value)
            _add_slapd(home, ldap)
            _set_up_people(home, workdir, everyone, fill=min(200, args.enrollments))
            ocsp_requests = _ocsp_requests(home)
            outcome, ocsp_counts = Outcome(), Counter[str]()
            leases = LeaseWatch(home)
            with (
                nodes(home, args.nodes, workdir) as started,
                haproxy([port for port, _ in started], workdir) as front,
                leases,
            ):
                stop = threading.Event()
                ocsp_thread = threading.Thread(
                    target=ocsp_load,
                    args=(front, (ocsp_requests * (args.ocsp // max(1, len(ocsp_requests)) + 1))[: args.ocsp], stop, ocsp_counts),
                )  # fmt: skip
                ocsp_thread.start()
                faults = Faults(args, started, pg, mail, ldap)
                queue = list(everyone)
                random.shuffle(queue)
                lock = threading.Lock()

                failures: list[BaseException] = []

                def worker() -> None:
                    try:
                        while True:
                            with lock:
                                if not queue:
                                    return
                                person = queue.pop()
                                done = len(everyone) - len(queue)
                            faults.maybe(done)
                            enroll_as_a_person(front, person, outcome, args.tries, args.retry_pause)
                    except BaseException as exc:  # the run must fail, not finish quietly
                        failures.append(exc)
                        with lock:
                            queue.clear()

                with common.Progress("enrollments", len(everyone)) as progress:
                    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
                    for thread in threads:
                        thread.start()
                    while any(t.is_alive() for t in threads):
                        progress.update(len(everyone) - len(queue))
                        time.sleep(0.5)
                if failures:
                    raise SystemExit(f"an enrolling thread failed: {failures[0]!r}") from failures[
                        0
                    ]
                stop.set()
                ocsp_thread.join(120)
                faults.end()  # an outage still on ends now
                settled, left = _settle(home, args.settle)
            checks = _checks(home, outcome, mail, settled, args.clients)
            checks["left_after_settling"] = left
            checks.update(_published(home, ldap))
            checks["server_errors"] = _server_errors(workdir)
            checks["leases_taken_early"] = leases.taken_early
            checks["lease_samples"] = leases.samples
            checks["ok"] = bool(
                checks["ok"]
                and checks["publish_missing"] == 0
                and checks["publish_stale"] == 0
                and not leases.taken_early
            )
            # Keep what the nodes and HAProxy said, for whoever reads the result.
            kept = Path(tempfile.mkdtemp(prefix="mailpki-soak-logs-"))
            for log in workdir.glob("*.log"):
                shutil.copy(log, kept)
            checks["logs_kept_in"] = str(kept)
        finally:
            if faults is not None:
                faults.close()
            mail.stop()
            pg.stop()
    assert faults is not None
    return {
        "benchmark": "soak_cluster",
        "nodes": args.nodes,
        "enrollments": args.enrollments,
        "completed": outcome.completed,
        "refused": dict(outcome.refused),
        "interrupted": outcome.interrupted,
        "broken": dict(outcome.broken),
        "retried": dict(outcome.retried),
        "ocsp": dict(ocsp_counts),
        "faults": faults.fired,
        **checks,
    }


def _server_errors(workdir: Path, most: int = 20) -> list[str]:
    """The nodes' internal errors (a 500 logs its reason, a crash its traceback), to say
    what broke; the 503s of the outages are expected and left out."""
    lines: list[str] = []
    for log in sorted(workdir.glob("node*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if " 500 " in line or "Traceback" in line or "Exception in" in line:
                lines.append(f"{log.stem}: {line[:300]}")
    return lines[:most]


def _cli(home: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mailpki", *args, "--home", str(home)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"mailpki {' '.join(args[:2])} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _add_slapd(home: Path, ldap: Any) -> None:
    """The slapd as the instance's directory for example.com (logon facts, publishing)."""
    _cli(
        home, "directory", "add", "corp", "--flavour", "openldap", "--url", ldap.ldaps_url,
        "--base-dn", ldap.base_dn, "--bind-dn", ldap.bind_dn,
        "--bind-password-file", str(ldap.bind_password_file), "--domain", "example.com",
        "--ca-file", str(ldap.ca_file),
    )  # fmt: skip


def _set_up_people(home: Path, workdir: Path, everyone: list[Person], fill: int) -> None:
    """HR PINs for the people (their entries are the slapd's), and a full key pool."""
    pins_csv = workdir / "pins.csv"
    with pins_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["employee_id", "mail", "name", "pin"])
        for p in everyone:
            writer.writerow([p.login, p.mail, f"User {p.index:05d}", p.pin])
    common.log(f"pins import: {len(everyone)} people")
    _cli(home, "pins", "import", str(pins_csv))
    pins_csv.unlink()
    # The server's housekeeping tops the pool up to keymanager.pool_size: the pool is
    # filled beyond it by what the run takes, so no refill competes with the enrollments.
    _cli(home, "config", "set", "keymanager.pool_size", "20")
    t0 = time.monotonic()
    _cli(home, "keys", "pool", "fill", "--size", str(fill))
    common.log(f"key pool filled to {fill} in {time.monotonic() - t0:.1f} s")


class Faults:
    """The faults, each fired once when the enrollments pass its mark; each outage ends
    after its time. The servers are brought back by one thread that lives until
    `close()`: slapd dies with the thread that started it (the fixture's parent-death
    signal), so a short-lived timer thread must not start it."""

    def __init__(
        self, args: argparse.Namespace, started: list[tuple[int, subprocess.Popen[bytes]]],
        pg: Postgres, mail: Mail, ldap: Any,
    ) -> None:  # fmt: skip
        self.args, self.started, self.pg, self.mail, self.ldap = args, started, pg, mail, ldap
        self.fired: list[str] = []
        self._lock = threading.Lock()
        self._due: list[tuple[float, str, Any]] = []
        self._wake = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._bring_back, name="fault-ends", daemon=True)
        self._thread.start()

    def _later(self, seconds: float, name: str, action: Any) -> None:
        with self._wake:
            self._due.append((time.monotonic() + seconds, name, action))
            self._wake.notify_all()

    def _bring_back(self) -> None:
        while True:
            with self._wake:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    ready = [d for d in self._due if d[0] <= now]
                    if ready:
                        break
                    nearest = min((d[0] for d in self._due), default=now + 1)
                    self._wake.wait(max(0.05, nearest - now))
                for item in ready:
                    self._due.remove(item)
                self._busy = True
            try:
                for _, name, action in ready:
                    common.log(f"fault over: {name}")
                    action()
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def _fire(self, name: str, done: int, mark: int) -> bool:
        if done < mark or any(f.startswith(name) for f in self.fired):
            return False
        self.fired.append(f"{name} at {done}")
        return True

    def maybe(self, done: int) -> None:
        total, args = self.args.enrollments, self.args
        with self._lock:
            if len(self.started) > 1 and self._fire("kill node 1", done, total // 4):
                common.log("fault: SIGKILL to node 1")
                os.killpg(self.started[1][1].pid, signal.SIGKILL)
            if self._fire("replica stopped", done, total * 35 // 100):
                common.log(f"fault: replica stopped for {args.replica_outage} s")
                self.pg.stop_replica()
                self._later(args.replica_outage, "replica", self.pg.start_replica)
            if self._fire("primary restarted", done, total // 2):
                common.log("fault: PostgreSQL primary restart")
                self.pg.restart()
            if self._fire("SMTP and slapd down", done, total * 6 // 10):
                common.log(
                    f"fault: SMTP down for {args.mail_outage} s, slapd for {args.directory_outage} s"
                )
                self.mail.stop()
                self.ldap.stop()
                self._later(args.mail_outage, "SMTP", self.mail.start)
                self._later(args.directory_outage, "slapd", self._start_slapd)

    def _start_slapd(self) -> None:
        if not self.ldap.running:
            self.ldap.start()

    def end(self) -> None:
        """Every outage still on ends now (a short run can finish inside one), on the
        thread that brings servers back; returns when they are back."""
        with self._wake:
            self._due = [(0.0, name, action) for _, name, action in self._due]
            self._wake.notify_all()
            self._wake.wait_for(lambda: not self._due and not self._busy, timeout=120)
        with contextlib.suppress(subprocess.CalledProcessError):
            if not (self.pg.replica_data / "postmaster.pid").exists():
                self.pg.start_replica()
        self.mail.start()
        if not self.ldap.running:  # brought back by no one (a fault that never ended)
            raise SystemExit("slapd did not come back after its outage")

    def close(self) -> None:
        """Let the thread go (slapd, if it started it, stops with it: call last)."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(30)


class LeaseWatch:
    """Samples the job_leases table; a lease that passes to another holder before the
    last seen expiry of the previous one is a job run twice at once."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.samples = 0
        self.taken_early: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        from sqlalchemy import select

        from mailpki.instance.instance import Instance
        from mailpki.store.models import JobLease

        instance = Instance.open(self.home)
        seen: dict[str, tuple[str, Any, int]] = {}
        try:
            while not self._stop.wait(0.2):
                try:
                    with instance.db.session() as session:
                        rows = session.execute(
                            select(JobLease.name, JobLease.holder, JobLease.acquired_at,
                                   JobLease.expires_at, JobLease.runs)
                        ).all()  # fmt: skip
                except Exception:  # the primary restarting: sample again later
                    continue
                self.samples += 1
                for name, holder, acquired, expires, runs in rows:
                    before = seen.get(name)
                    if before is not None and before[0] != holder and acquired < before[1]:
                        self.taken_early.append(
                            f"{name}: {holder} took it at {acquired:%H:%M:%S.%f} while "
                            f"{before[0]}'s ran to {before[1]:%H:%M:%S.%f}"
                        )
                    seen[name] = (holder, expires, runs)
        finally:
            instance.close()


def _published(home: Path, ldap: Any) -> dict[str, int]:
    """Every valid, unsuperseded subscriber certificate is in its person's
    userCertificate;binary in slapd, and no revoked one is."""
    import ldap3
    from sqlalchemy import select

    from mailpki.instance.instance import Instance
    from mailpki.store.models import CertificateRecord

    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            rows = session.execute(
                select(CertificateRecord.email, CertificateRecord.der, CertificateRecord.status,
                       CertificateRecord.superseded_by)
                .where(CertificateRecord.issuer == "issuing", CertificateRecord.profile != "ocsp")
            ).all()  # fmt: skip
    finally:
        instance.close()
    conn = ldap3.Connection(
        ldap3.Server(ldap.host, port=ldap.port, get_info=ldap3.NONE),
        ldap.admin_dn, ldap.admin_password, auto_bind=True,
    )  # fmt: skip
    missing = stale = checked = 0
    try:
        for email, der, status, superseded in rows:
            login = (email or "").split("@", 1)[0]
            if not (email or "").endswith("@example.com") or not login.startswith("user"):
                continue  # not one of the slapd's people (an officer's or admin's certificate)
            checked += 1
            conn.search(
                f"uid={login},{ldap.people_dn}", "(objectClass=*)", ldap3.BASE,
                attributes=["userCertificate;binary"],
            )  # fmt: skip
            values = conn.entries[0]["userCertificate;binary"].values if conn.entries else []
            there = bytes(der) in {bytes(v) for v in values}
            if status == "valid" and superseded is None and not there:
                missing += 1
            if status == "revoked" and there:
                stale += 1
    finally:
        conn.unbind()
    return {"published_checked": checked, "publish_missing": missing, "publish_stale": stale}


def _ocsp_requests(home: Path) -> list[str]:
    """GET paths of OCSP requests for the instance's own OCSP responder certificate."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509 import ocsp

    issuing = x509.load_pem_x509_certificate((home / "ca" / "issuing.pem").read_bytes())
    responder = x509.load_pem_x509_certificate((home / "ca" / "ocsp-responder.pem").read_bytes())
    request = ocsp.OCSPRequestBuilder().add_certificate(responder, issuing, hashes.SHA1()).build()
    return [base64.b64encode(request.public_bytes(Encoding.DER)).decode()]


def _settle(home: Path, seconds: float) -> tuple[bool, dict[str, int]]:
    """Wait for the surviving nodes' housekeeping: outbox and publishing drained, pending
    deliveries reconciled (their certificates revoked). Whether they were, and what was
    left at the last look."""
    from mailpki.instance.health import read_status
    from mailpki.instance.instance import Instance

    instance = Instance.open(home)
    try:
        deadline = time.monotonic() + seconds
        while True:
            status = read_status(instance)
            left = {
                "outbox": status.outbox.waiting,
                "publishing": status.publishing.waiting,
                "pending_deliveries": _pending_deliveries(instance),
            }
            if not any(left.values()):
                return True, left
            if time.monotonic() > deadline:
                return False, left
            time.sleep(1)
    finally:
        instance.close()


def _pending_deliveries(instance: Any) -> int:
    from sqlalchemy import func, select

    from mailpki.store.models import EscrowedKey

    with instance.db.session() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(EscrowedKey).where(EscrowedKey.state == "pending")
            )
            or 0
        )


def _checks(
    home: Path, outcome: Outcome, mail: Mail, settled: bool, clients: int
) -> dict[str, Any]:
    from sqlalchemy import func, select

    from mailpki.instance.instance import Instance
    from mailpki.store.models import CertificateRecord, EscrowedKey

    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            duplicates = session.execute(
                select(CertificateRecord.serial, func.count())
                .group_by(CertificateRecord.serial)
                .having(func.count() > 1)
            ).all()
            half_done = session.scalar(
                select(func.count()).select_from(EscrowedKey).where(EscrowedKey.state == "pending")
            )
            subscribers = session.scalar(
                select(func.count()).select_from(CertificateRecord)
                .where(CertificateRecord.issuer == "issuing", CertificateRecord.profile != "ocsp")
            )  # fmt: skip
        verify = subprocess.run(
            [sys.executable, "-m", "mailpki", "audit", "verify", "--home", str(home)],
            capture_output=True, text=True,
        )  # fmt: skip
    finally:
        instance.close()
    escrow_mails = [m for m in _parsed(mail.received) if "escrow" in m.get("Subject", "").lower()]
    notices = Counter(m.get("To", "") for m in escrow_mails)
    twice = {to for to, n in notices.items() if n > 1}
    # The same Message-ID twice: one outbox row delivered twice (an SMTP session cut after
    # the server took the data but before the client heard 250: mail is at least once, and
    # the copies carry one Message-ID); different ones would be a notice queued twice.
    repeated = [
        {
            "to": to,
            "same_message": len({m.get("Message-ID") for m in escrow_mails if m.get("To") == to})
            == 1,
        }
        for to in sorted(twice)
    ]
    return {
        "settled": settled,
        "duplicate_serials": len(duplicates),
        "deliveries_still_pending": int(half_done or 0),
        "certificates_issued": int(subscribers or 0),
        "escrow_notices_delivered": sum(notices.values()),
        "escrow_notices_twice": len(twice),
        "escrow_notices_repeated": repeated,
        "audit_verify_exit": verify.returncode,
        "ok": bool(
            outcome.completed > 0
            and settled
            and not duplicates
            and not half_done
            and not outcome.broken
            and outcome.interrupted <= clients
            and sum(notices.values()) >= outcome.completed
            and all(item["same_message"] for item in repeated)
            and verify.returncode == 0
        ),
    }


def _parsed(raw: list[bytes]) -> list[Any]:
    from email import message_from_bytes

    return [message_from_bytes(message) for message in raw]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--enrollments", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8, help="enrolling threads")
    parser.add_argument("--ocsp", type=int, default=5000, help="OCSP GETs beside the enrollments")
    parser.add_argument(
        "--mail-outage", type=float, default=60.0, help="seconds the SMTP server is down"
    )
    parser.add_argument(
        "--tries",
        type=int,
        default=4,
        help="attempts per person: one refused or cut off comes back after --retry-pause",
    )
    parser.add_argument("--retry-pause", type=float, default=20.0, help="seconds")
    parser.add_argument(
        "--directory-outage", type=float, default=60.0, help="seconds slapd is down"
    )
    parser.add_argument(
        "--replica-outage", type=float, default=30.0, help="seconds the replica is down"
    )
    parser.add_argument(
        "--settle", type=float, default=180.0, help="seconds to wait for the queues"
    )
    args = common.parse_args(parser)
    if args.nodes < 1 or args.enrollments < 4 or args.clients < 1:
        parser.error("--nodes ≥ 1, --enrollments ≥ 4, --clients ≥ 1")
    result = run(args)
    for key, value in result.items():
        common.log(f"{key}: {value}")
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
