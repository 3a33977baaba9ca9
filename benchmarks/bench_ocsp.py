"""OCSP responses/s over HTTP: `mailpki serve --workers 2` against `openssl ocsp -multi 2`
and against nginx serving `mailpki ocsp export`, in the same run, same load.

A throwaway instance (P-256 CA, P-256 OCSP responder) issues one certificate and
pre-signs its answer; each server is started as a subprocess on 127.0.0.1 and loaded
by `wrk` (same connections, same duration) with a Lua script that counts only
*successful* OCSPResponses:

  get   a fixed RFC 5019 GET request without nonce (mailpki: the pre-signed answer)
  post  POST requests each carrying a fresh 16-byte nonce (signed every time)

The anchors, back to back with mailpki for each kind:
  - `openssl ocsp -index IDX -rsigner ... -multi 2 -ndays 1` on an index listing the
    same certificate, with the same responder key. It closes every connection, so wrk
    sends it `Connection: close` (a new connection per request; mailpki keeps them).
  - nginx with the documented configuration serving the exported answer files (GET).
A sample of each is parsed and its signature verified first. Without wrk, or with
``--client python``, only mailpki is measured.

    python -m benchmarks.bench_ocsp                 # 8 s each, 16 connections
    python -m benchmarks.bench_ocsp --quick         # 3 s each

Targets: GET >= 1.5 x and POST >= 1.0 x openssl ocsp; the nginx export >= 5 x it.
Servers and load generator share the machine's cores: figures move with its load.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from benchmarks import _common as common

TARGET_RPS = 2000.0
TARGET_GET_RATIO = 1.5  # x openssl ocsp -multi 2, same certificate, same wrk load
TARGET_POST_RATIO = 1.0
TARGET_NGINX_RATIO = 5.0
NONCE_LEN = 16
OCSP_REQUEST = "application/ocsp-request"


# -- requests and checks ----------------------------------------------------------------------


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None) -> bytes:
    # SHA-1 CertIDs: what OpenSSL and most mail clients send.
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def successful(der: bytes) -> bool:
    """Status byte of an OCSPResponse (as the server's own check): successful(0)?"""
    if len(der) < 5 or der[0] != 0x30:
        return False
    offset = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    return der[offset : offset + 3] == b"\x0a\x01\x00"


def check_response(der: bytes, serial: int, nonce: bytes | None) -> str:
    """Parse and verify one response fully; a short description, or raise."""
    resp = ocsp.load_der_ocsp_response(der)
    if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise SystemExit(f"OCSP response status {resp.response_status.name}, not successful")
    if resp.serial_number != serial or resp.certificate_status is not ocsp.OCSPCertStatus.GOOD:
        raise SystemExit(
            f"unexpected answer: serial {resp.serial_number:#x} {resp.certificate_status.name}"
        )
    signer = resp.certificates[0].public_key()
    alg = resp.signature_hash_algorithm
    assert alg is not None
    if isinstance(signer, ec.EllipticCurvePublicKey):
        signer.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(alg))
    elif isinstance(signer, rsa.RSAPublicKey):
        signer.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), alg)
    if nonce is not None:
        echoed = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        if echoed != nonce:
            raise SystemExit("the nonce was not echoed")
    return f"successful, good, signature ok, {len(der)} bytes"


def fetch(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": OCSP_REQUEST} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def sample_checks(
    port: int, get_path: str, cert: x509.Certificate, issuer: x509.Certificate, when: str
) -> dict[str, str]:
    status, der = fetch(port, "GET", get_path)
    if status != 200:
        raise SystemExit(f"GET {get_path[:40]}...: HTTP {status}")
    get_desc = check_response(der, cert.serial_number, None)
    nonce = os.urandom(NONCE_LEN)
    status, der = fetch(port, "POST", "/ocsp", ocsp_request(cert, issuer, nonce))
    if status != 200:
        raise SystemExit(f"POST /ocsp: HTTP {status}")
    post_desc = check_response(der, cert.serial_number, nonce)
    common.log(f"sample {when}: GET {get_desc}; POST {post_desc} (nonce echoed)")
    return {"get": get_desc, "post": post_desc}


# -- the server -------------------------------------------------------------------------------


def _proc_children(pid: int) -> list[int]:
    out = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    return out


def tree_cpu_seconds(pid: int) -> float:
    """user+system CPU of a process and its descendants (alive ones), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{current}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        stack += _proc_children(current)
    return total / ticks


@contextlib.contextmanager
def server(home: Path, port: int, workers: int, log_path: Path) -> Any:
    cmd = [
        sys.executable,
        "-m",
        "mailpki",
        "serve",
        "--home",
        str(home),
        "--port",
        str(port),
        "--workers",
        str(workers),
        # No access line per request, as the anchors write none (openssl ocsp logs
        # nothing, the nginx configuration here has access_log off).
        "--log-level",
        "warning",
    ]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"the server exited ({proc.returncode}):\n"
                    f"{log_path.read_text(errors='replace')[-2000:]}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if fetch(port, "GET", "/health")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the server did not answer /health within 60 s")
            time.sleep(0.1)
        # Every worker must be up, not only the first: give the others a moment.
        time.sleep(1.0)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group of the server we started
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- the anchors: openssl ocsp -multi 2, and nginx serving the export ---------------------------


@contextlib.contextmanager
def openssl_responder(home: Path, cert: x509.Certificate, workdir: Path, port: int) -> Any:
    """`openssl ocsp -index IDX -multi 2` for the same CA, responder and certificate."""
    from mailpki.instance.instance import Instance

    folder = workdir / "openssl-ocsp"
    folder.mkdir(parents=True)
    instance = Instance.open(home)
    key = instance.keys.load("ocsp")
    (folder / "ocsp.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / "ocsp.key").chmod(0o600)
    for name, item in (
        ("ocsp.pem", instance.hierarchy.ocsp),
        ("issuing.pem", instance.hierarchy.issuing),
    ):
        (folder / name).write_bytes(item.public_bytes(serialization.Encoding.PEM))
    instance.close()
    serial = format(cert.serial_number, "X")
    serial = serial if len(serial) % 2 == 0 else "0" + serial
    expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    (folder / "index.txt").write_text(f"V\t{expiry}\t\t{serial}\tunknown\t/CN=bench\n")
    cmd = ["openssl", "ocsp", "-index", str(folder / "index.txt"), "-port", str(port)]
    cmd += ["-rsigner", str(folder / "ocsp.pem"), "-rkey", str(folder / "ocsp.key")]
    cmd += ["-CA", str(folder / "issuing.pem"), "-multi", "2", "-ignore_err", "-ndays", "1"]
    # Not in a new session: started that way it accepts connections but never answers.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if (
                    fetch(port, "POST", "/", ocsp_request(cert, instance.hierarchy.issuing, None))[
                        0
                    ]
                    == 200
                ):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("openssl ocsp did not start")
            time.sleep(0.2)
        yield proc
    finally:
        # Its -multi workers outlive the parent: end each of them by PID.
        workers = _proc_children(proc.pid)
        proc.terminate()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=15)


def readme_nginx_config() -> str:
    page = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
    section = page.read_text().split("## Pre-signed OCSP answers, and nginx in front", 1)[1]
    block = re.search(r"```nginx\n(.*?)```", section, re.S)
    if block is None:
        raise SystemExit("docs/operations.md lost its nginx configuration")
    return block.group(1)


@contextlib.contextmanager
def nginx_export(home: Path, workdir: Path, port: int, upstream_port: int) -> Any:
    """Debian's nginx with the documented configuration, serving `mailpki ocsp export`."""
    from mailpki.instance.instance import Instance
    from mailpki.instance.ocsp_export import export_ocsp

    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    export = workdir / "ocsp-export"
    instance = Instance.open(home)
    report = export_ocsp(instance, export)
    instance.close()
    common.log(f"  exported {report.written} pre-signed answers")
    run = workdir / "nginx"
    run.mkdir()
    site = readme_nginx_config().replace("/var/lib/mailpki/ocsp/", f"{export}/")
    site = site.replace("127.0.0.1:8080", f"127.0.0.1:{upstream_port}")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    temps = "".join(
        f"{k}_temp_path {run}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    (run / "nginx.conf").write_text(
        f"daemon off;\n{user}worker_processes 2;\npid {run}/nginx.pid;\n"
        f"error_log {run}/error.log warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\naccess_log off;\n{temps}{site}\n}}\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(run / "nginx.conf"), "-p", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if fetch(port, "GET", "/health")[0] in (200, 502):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"nginx did not start: {(run / 'error.log').read_text()}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


# -- load generators --------------------------------------------------------------------------


def _lua_bytes(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


LUA = r"""
-- generated by benchmarks/bench_ocsp.py
local mode = "%(mode)s"
local close = %(close)s
local prefix = %(prefix)s
local suffix = %(suffix)s
ok = 0
bad = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000) + #threads)
  if close then
    wrk.headers["Connection"] = "close"  -- openssl ocsp closes every connection
  end
  if mode == "post" then
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/ocsp-request"
  end
end

if mode == "post" then
  function request()
    local t = {}
    for i = 1, %(nonce_len)d do t[i] = string.char(math.random(0, 255)) end
    return wrk.format(nil, "/ocsp", nil, prefix .. table.concat(t) .. suffix)
  end
end

function response(status, headers, body)
  local good = false
  if status == 200 and body:byte(1) == 48 then
    local b = body:byte(2)
    local off = 3
    if b >= 128 then off = 3 + (b - 128) end
    good = body:sub(off, off + 2) == "\10\1\0"
  end
  if good then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local o, b = 0, 0
  for _, thread in ipairs(threads) do
    o = o + thread:get("ok")
    b = b + thread:get("bad")
  end
  io.write(string.format("LUA_OK %%d\nLUA_BAD %%d\n", o, b))
  io.write(string.format("LAT_P50_US %%d\nLAT_P99_US %%d\n",
                         latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    args: argparse.Namespace,
    port: int,
    mode: str,
    get_path: str,
    post_body: bytes,
    nonce_at: int,
    workdir: Path,
    *,
    close: bool = False,
) -> dict[str, Any]:
    script = workdir / f"ocsp-{mode}.lua"
    script.write_text(
        LUA
        % {
            "mode": mode,
            "prefix": _lua_bytes(post_body[:nonce_at]),
            "suffix": _lua_bytes(post_body[nonce_at + NONCE_LEN :]),
            "nonce_len": NONCE_LEN,
            "close": "true" if close else "false",
        }
    )
    url = f"http://127.0.0.1:{port}" + (get_path if mode == "get" else "/ocsp")
    cmd = [
        "wrk",
        "-t",
        str(args.threads),
        "-c",
        str(args.connections),
        "-d",
        f"{args.duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60)
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed: {proc.stderr}")
    text = proc.stdout

    def grab(pattern: str, default: str = "0") -> str:
        m = re.search(pattern, text)
        return m.group(1) if m else default

    ok, bad = int(grab(r"LUA_OK (\d+)")), int(grab(r"LUA_BAD (\d+)"))
    seconds = float(grab(r"requests in ([\d.]+)s", str(args.duration)))
    return {
        "requests": ok + bad,
        "successful": ok,
        "failed": bad,
        "socket_errors": grab(r"Socket errors: (.*)", "none").strip(),
        "seconds": seconds,
        "rps": round(ok / seconds, 1),
        "latency_p50_ms": round(int(grab(r"LAT_P50_US (\d+)")) / 1000, 2),
        "latency_p99_ms": round(int(grab(r"LAT_P99_US (\d+)")) / 1000, 2),
    }


def _py_client(
    port: int,
    method: str,
    path: str,
    body: bytes,
    nonce_at: int,
    seconds: float,
    start_at: float,
    out: Any,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": OCSP_REQUEST} if method == "POST" else {}
    ok = bad = 0
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = time.monotonic() + seconds
    payload: bytes | None = None
    while time.monotonic() < deadline:
        if method == "POST":
            payload = body[:nonce_at] + os.urandom(NONCE_LEN) + body[nonce_at + NONCE_LEN :]
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            bad += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        if resp.status == 200 and successful(data):
            ok += 1
        else:
            bad += 1
    conn.close()
    out.put((ok, bad))


def run_python(
    args: argparse.Namespace, port: int, mode: str, get_path: str, post_body: bytes, nonce_at: int
) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    method, path = ("GET", get_path) if mode == "get" else ("POST", "/ocsp")
    start_at = time.time() + 0.5
    procs = [
        ctx.Process(
            target=_py_client,
            daemon=True,
            args=(port, method, path, post_body, nonce_at, args.duration, start_at, out),
        )
        for _ in range(args.connections)
    ]
    for proc in procs:
        proc.start()
    counts = [out.get(timeout=args.duration + 60) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    ok, bad = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return {
        "requests": ok + bad,
        "successful": ok,
        "failed": bad,
        "seconds": args.duration,
        "rps": round(ok / args.duration, 1),
    }


def load(
    args: argparse.Namespace,
    client: str,
    port: int,
    mode: str,
    get_path: str,
    post_body: bytes,
    nonce_at: int,
    workdir: Path,
    server_pid: int,
    *,
    who: str = "mailpki",
    close: bool = False,
) -> dict[str, Any]:
    label = "GET, no nonce (cached)" if mode == "get" else "POST, fresh nonce (signed each time)"
    label = f"{who}: {label}"
    cpu0, wall0 = tree_cpu_seconds(server_pid), time.monotonic()
    with common.Progress(f"{label}: {client} for {args.duration} s", None, every=5.0):
        if client == "wrk":
            result = run_wrk(args, port, mode, get_path, post_body, nonce_at, workdir, close=close)
        else:
            result = run_python(args, port, mode, get_path, post_body, nonce_at)
    wall = time.monotonic() - wall0
    result["server_cpu_cores"] = round((tree_cpu_seconds(server_pid) - cpu0) / wall, 2)
    common.log(f"  {label}: {result}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=None, help="seconds per load (10)")
    parser.add_argument("--quick", action="store_true", help="3 s per load")
    parser.add_argument("--server-workers", type=int, default=2, help="mailpki serve --workers")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help="concurrent connections (wrk: 16; python: 4 processes)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--ca-key-type", choices=("p256", "rsa3072"), default="p256")
    parser.add_argument(
        "--no-anchor", action="store_true", help="skip openssl ocsp and nginx (wrk only)"
    )
    args = common.parse_args(parser)
    if args.duration is None:
        args.duration = 3 if args.quick else 8
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    if client == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk), use --client python")
    if args.connections is None:
        args.connections = 16 if client == "wrk" else 4

    with common.temp_dir("mailpki-bench-ocsp-") as workdir:
        home = workdir / "home"
        common.log(f"new instance in {home} ({args.ca_key_type} CA)")
        common.create_instance(home, ca_key_type=args.ca_key_type, database_url=None)
        from mailpki.instance.instance import Instance

        instance = Instance.open(home)
        issued = instance.ca.issue_from_csr(common.make_csr(0), common.person(0), actor="bench")
        cert, issuer = issued.certificate, instance.hierarchy.issuing
        instance.ca.presigned.refresh_all()  # what the server's first pass would do
        instance.close()

        get_der = ocsp_request(cert, issuer, None)
        get_path = "/ocsp/" + urllib.parse.quote(base64.b64encode(get_der).decode(), safe="")
        marker = os.urandom(NONCE_LEN)
        post_body = ocsp_request(cert, issuer, marker)
        nonce_at = post_body.find(marker)
        assert nonce_at > 0 and post_body.count(marker) == 1

        port = common.free_port()
        anchors = client == "wrk" and not args.no_anchor
        common.log(
            f"mailpki serve --workers {args.server_workers} on 127.0.0.1:{port}; "
            f"load: {client}, {args.connections} connections, {args.duration} s each"
        )
        results: dict[str, dict[str, Any]] = {}

        # openssl's responder takes the base64 right after the host: no /ocsp/ prefix.
        openssl_get_path = get_path.removeprefix("/ocsp")

        def anchor_check(anchor_port: int, label: str, path: str) -> None:
            status, der = fetch(anchor_port, "GET", path)
            if status != 200:
                raise SystemExit(f"{label} GET: HTTP {status}")
            common.log(f"sample {label}: GET {check_response(der, cert.serial_number, None)}")

        with server(home, port, args.server_workers, workdir / "server.log") as proc:
            before = sample_checks(port, get_path, cert, issuer, "before load")
            for mode in ("get", "post"):
                if anchors:
                    anchor_port = common.free_port()
                    with openssl_responder(home, cert, workdir / mode, anchor_port) as anchor:
                        anchor_check(anchor_port, "openssl ocsp", openssl_get_path)
                        results[f"openssl_{mode}"] = load(
                            args, client, anchor_port, mode, openssl_get_path, post_body, nonce_at,
                            workdir, anchor.pid, who="openssl ocsp -multi 2", close=True,
                        )  # fmt: skip
                results[mode] = load(
                    args, client, port, mode, get_path, post_body, nonce_at, workdir, proc.pid
                )
            if anchors:
                nginx_port = common.free_port()
                with nginx_export(home, workdir, nginx_port, port) as web:
                    anchor_check(nginx_port, "nginx", get_path)
                    results["nginx_get"] = load(
                        args, client, nginx_port, "get", get_path, post_body, nonce_at,
                        workdir, web.pid, who="nginx, exported files",
                    )  # fmt: skip
            after = sample_checks(port, get_path, cert, issuer, "after load")

    for mode, result in results.items():
        if result["failed"]:
            common.log(f"WARNING: {result['failed']} {mode} responses were not successful")

    def ratio(ours: str, theirs: str) -> float | None:
        if theirs not in results or not results[theirs]["rps"]:
            return None
        return round(results[ours]["rps"] / results[theirs]["rps"], 2)

    ratios = {
        "get": ratio("get", "openssl_get"),
        "post": ratio("post", "openssl_post"),
        "nginx_get": ratio("nginx_get", "openssl_get") if "nginx_get" in results else None,
    }
    for key, value in ratios.items():
        if value is not None:
            common.log(f"ratio {key}: {value}")
    targets = [
        common.target("OCSP GET cached", results["get"]["rps"], "resp/s", TARGET_RPS, ">="),
        common.target(
            "OCSP POST nonce (signed)", results["post"]["rps"], "resp/s", TARGET_RPS, ">="
        ),
    ]
    if anchors:
        o_get, o_post = results["openssl_get"]["rps"], results["openssl_post"]["rps"]
        targets += [
            common.target(
                f"GET / openssl ocsp -multi 2 ({results['get']['rps']:,.0f} / {o_get:,.0f})",
                ratios["get"], "x", TARGET_GET_RATIO, ">=",
            ),
            common.target(
                f"POST nonce / openssl ocsp -multi 2 ({results['post']['rps']:,.0f} / {o_post:,.0f})",
                ratios["post"], "x", TARGET_POST_RATIO, ">=",
            ),
            common.target(
                f"nginx export GET / openssl ocsp ({results['nginx_get']['rps']:,.0f} / {o_get:,.0f})",
                ratios["nginx_get"], "x", TARGET_NGINX_RATIO, ">=",
            ),
        ]  # fmt: skip
    common.emit(
        {
            "benchmark": "bench_ocsp",
            "client": client,
            "connections": args.connections,
            "server_workers": args.server_workers,
            "duration_s": args.duration,
            "ca_key_type": args.ca_key_type,
            "machine": common.machine(),
            "note": "servers and load generator share the machine's cores; "
            "openssl ocsp closes each connection (wrk sends Connection: close to it)",
            "samples": {"before": before, "after": after},
            "get_cached": results["get"],
            "post_nonce": results["post"],
            "anchors": {k: v for k, v in results.items() if k.startswith(("openssl", "nginx"))},
            "ratios": ratios,
            "targets": targets,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
