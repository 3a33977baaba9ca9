"""Several nodes on one PostgreSQL behind HAProxy, with faults, then the books are checked.

    python -m benchmarks.soak_cluster                         # 3 nodes, 300 enrollments
    python -m benchmarks.soak_cluster --nodes 3 --enrollments 1000 --ocsp 20000

What runs (all on this machine, loopback only):
- a throwaway PostgreSQL cluster; an instance on it (P-256 CA, P-256 subscriber keys, key
  pool filled) with people and HR PINs in its embedded directory;
- an SMTP server (aiosmtpd) the instance mails through;
- `--nodes` `mailpki serve` processes and HAProxy (Debian's) in front of them, round
  robin, health-checked on /readyz;
- `--enrollments` portal enrollments (PIN logon, form, one-time download) by `--clients`
  threads through HAProxy, and `--ocsp` OCSP GETs beside them.

The faults, while that load runs: at a quarter of the enrollments one node is killed with
SIGKILL; at half, PostgreSQL is restarted; from 60 % the SMTP server is down for
`--mail-outage` seconds.

Afterwards: every enrollment either completed (its PKCS#12 downloaded) or was refused with
a page that says why (none half-done: every issued certificate was downloaded, or revoked
by the housekeeping of a surviving node), no serial twice, every escrow notice delivered
exactly once once the mail server is back, and `mailpki audit verify` passes. The last
stdout line is JSON; the exit code is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
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
from benchmarks.bench_portal import LINK_RE, PKCS12, Browser, Person, csrf_of, people, set_up

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
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(
                str(common.PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
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


def enroll(port: int, person: Person, outcome: Outcome) -> None:
    """Log on with the PIN, accept the form, download once; record how it ended."""
    browser = Browser(port, person.address)
    try:
        first = browser.request("GET", "/")
        if first.status != 200:
            _refused(outcome, "start", first.status, first.text)
            return
        logon = browser.request(
            "POST", "/logon",
            {"csrf": csrf_of(first, "GET /"), "method": "pin", "login": person.login,
             "secret": person.pin},
        )  # fmt: skip
        if logon.status != 303:
            _refused(outcome, "logon", logon.status, logon.text)
            return
        form = browser.request("GET", "/form")
        if form.status != 200:
            _refused(outcome, "form page", form.status, form.text)
            return
        done = browser.request(
            "POST", "/form",
            {"csrf": csrf_of(form, "GET /form"), "mode": "single", "accept": "on",
             "password_choice": "generate"},
        )  # fmt: skip
        link = LINK_RE.search(done.text)
        if done.status != 200 or link is None:
            _refused(outcome, "form", done.status, done.text)
            return
        download = browser.request("GET", f"/download/{link.group(1)}")
        if download.status != 200 or download.headers.get("content-type", "") != PKCS12:
            _refused(outcome, "download", download.status, download.text)
            return
        serial = re.search(r"\b([0-9A-F]{20,40})\b", done.text)
        with outcome.lock:
            outcome.completed += 1
            if serial:
                outcome.serials.append(serial.group(1))
    except (ConnectionError, http.client.RemoteDisconnected):
        with outcome.lock:
            outcome.interrupted += 1
    except (OSError, SystemExit) as exc:
        with outcome.lock:
            outcome.broken[type(exc).__name__] += 1
    finally:
        browser.close()


def _refused(outcome: Outcome, step: str, status: int, text: str) -> None:
    """A refusal counts as clear when the page is a real page with a message on it. The
    proxy's own 502/504 means the node died under that very request: interrupted."""
    if status in (502, 504):
        with outcome.lock:
            outcome.interrupted += 1
        return
    clear = status in (400, 403, 409, 429, 503) or "<h1" in text or "error" in text.lower()
    with outcome.lock:
        (outcome.refused if clear else outcome.broken)[f"{step} {status}"] += 1


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


def run(args: argparse.Namespace) -> dict[str, Any]:
    everyone = people(args.enrollments)
    with common.temp_dir("mailpki-soak-") as workdir:
        pg = Postgres(workdir)
        url = pg.start()
        mail = Mail()
        mail.start()
        try:
            home = workdir / "home"
            common.create_instance(home, ca_key_type="p256", database_url=url)
            for key, value in (
                ("keymanager.key_type", "p256"),
                ("smtp.host", "127.0.0.1"),
                ("smtp.port", str(mail.port)),
                # Short leases, so the survivors' housekeeping settles what the killed
                # node left half-done within the run, not ten minutes later.
                ("keymanager.delivery_lease_seconds", "20"),
                ("portal.download_minutes", "1"),
            ):
                subprocess.run(
                    [sys.executable, "-m", "mailpki", "config", "set", "--home", str(home), key, value],
                    check=True, capture_output=True,
                )  # fmt: skip
            set_up(home, workdir, everyone, pool_target=20, fill=min(200, args.enrollments))
            ocsp_requests = _ocsp_requests(home)
            outcome, ocsp_counts = Outcome(), Counter[str]()
            with (
                nodes(home, args.nodes, workdir) as started,
                haproxy([port for port, _ in started], workdir) as front,
            ):
                stop = threading.Event()
                ocsp_thread = threading.Thread(
                    target=ocsp_load,
                    args=(front, (ocsp_requests * (args.ocsp // max(1, len(ocsp_requests)) + 1))[: args.ocsp], stop, ocsp_counts),
                )  # fmt: skip
                ocsp_thread.start()
                faults = _faults(args, started, pg, mail)
                queue = list(everyone)
                random.shuffle(queue)
                lock = threading.Lock()

                def worker() -> None:
                    while True:
                        with lock:
                            if not queue:
                                return
                            person = queue.pop()
                            done = len(everyone) - len(queue)
                        faults(done)
                        enroll(front, person, outcome)

                with common.Progress("enrollments", len(everyone)) as progress:
                    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
                    for thread in threads:
                        thread.start()
                    while any(t.is_alive() for t in threads):
                        progress.update(len(everyone) - len(queue))
                        time.sleep(0.5)
                stop.set()
                ocsp_thread.join(120)
                mail.start()  # if the outage is still on: it ends now
                settled = _settle(home, args.settle)
            checks = _checks(home, outcome, mail, settled, args.clients)
        finally:
            mail.stop()
            pg.stop()
    return {
        "benchmark": "soak_cluster",
        "nodes": args.nodes,
        "enrollments": args.enrollments,
        "completed": outcome.completed,
        "refused": dict(outcome.refused),
        "interrupted": outcome.interrupted,
        "broken": dict(outcome.broken),
        "ocsp": dict(ocsp_counts),
        **checks,
    }


def _faults(args: argparse.Namespace, started: list[tuple[int, subprocess.Popen[bytes]]],
            pg: Postgres, mail: Mail) -> Any:  # fmt: skip
    fired: set[str] = set()
    lock = threading.Lock()
    total = args.enrollments

    def maybe(done: int) -> None:
        with lock:
            if done >= total // 4 and "kill" not in fired and len(started) > 1:
                fired.add("kill")
                common.log("fault: SIGKILL to node 1")
                os.killpg(started[1][1].pid, signal.SIGKILL)
            if done >= total // 2 and "pg" not in fired:
                fired.add("pg")
                common.log("fault: PostgreSQL restart")
                pg.restart()
            if done >= total * 6 // 10 and "mail" not in fired:
                fired.add("mail")
                common.log(f"fault: SMTP server down for {args.mail_outage} s")
                mail.stop()
                threading.Timer(args.mail_outage, mail.start).start()

    return maybe


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


def _settle(home: Path, seconds: float) -> bool:
    """Wait for the surviving nodes' housekeeping: outbox and publishing drained, pending
    deliveries reconciled (their certificates revoked)."""
    from mailpki.instance.health import read_status
    from mailpki.instance.instance import Instance

    instance = Instance.open(home)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status = read_status(instance)
            if (
                status.outbox.waiting == 0
                and status.publishing.waiting == 0
                and _pending_deliveries(instance) == 0
            ):
                return True
            time.sleep(1)
        return False
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
        "--mail-outage", type=float, default=20.0, help="seconds the SMTP server is down"
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
