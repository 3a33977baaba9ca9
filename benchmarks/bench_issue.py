"""Certificates/s of CSR issuance, every certificate linted, through the real code path.

Each run makes a throwaway instance (org Bench Corp, sponsored-multipurpose profile),
pre-generates P-256 CSRs (not timed), then times `N` worker processes that each open
the instance themselves and call ``mailpki.instance.operations.issue_from_csr`` (what
the CLI and the web portal run: policy, serial reservation, lint, sign, store + audit,
then an audit checkpoint) or, with ``--path ca``, ``Instance.ca.issue_from_csr`` alone.

    python -m benchmarks.bench_issue                       # p256 and rsa3072, 2 workers
    python -m benchmarks.bench_issue --ca-key-type p256 --workers 1 --count 1000
    python -m benchmarks.bench_issue --postgres            # throwaway PostgreSQL
    python -m benchmarks.bench_issue --database postgresql+psycopg://u@127.0.0.1/empty_db

Target: >= 300 certificates/s on 2 cores with a P-256 issuing CA.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common

TARGET_CERTS_PER_S = 300.0  # 2 workers, P-256 issuing CA, on 2 cores
KEY_TYPES = ("p256", "rsa3072")


# -- the worker (a separate process) ---------------------------------------------------------


def _issuer(home: Path, path: str) -> tuple[Any, Callable[[bytes, int], Any]]:
    from mailpki.instance import operations
    from mailpki.instance.instance import Instance

    instance = Instance.open(home)
    if path == "ops":

        def issue(csr: bytes, index: int) -> Any:
            return operations.issue_from_csr(
                instance,
                csr,
                **common.person_fields(index),
                organisation=None,
                site=None,
                profile=None,
                actor="bench",
            )
    else:

        def issue(csr: bytes, index: int) -> Any:
            return instance.ca.issue_from_csr(csr, common.person(index), actor="bench")

    return instance, issue


def worker(
    home: Path,
    path: str,
    jobs: list[tuple[int, bytes]],
    warmup: tuple[int, bytes],
    barrier: Any,
    counter: Any,
    results: Any,
) -> None:
    instance, issue = _issuer(home, path)
    issue(warmup[1], warmup[0])  # keys loaded, pkilint validator built, connections open
    barrier.wait()
    start = time.monotonic()
    for n, (index, csr) in enumerate(jobs, 1):
        issue(csr, index)
        if n % 10 == 0:
            with counter.get_lock():
                counter.value += 10
    end = time.monotonic()
    with counter.get_lock():
        counter.value += len(jobs) % 10
    instance.close()
    results.put((start, end, len(jobs)))


def breakdown_worker(home: Path, path: str, jobs: list[tuple[int, bytes]], results: Any) -> None:
    """Per-step milliseconds, from wrappers around the steps of issue_for_key."""
    from cryptography.hazmat.primitives.serialization import Encoding

    import mailpki.ca.authority as authority
    import mailpki.ca.signing as signing
    from mailpki.ca.lint import Linter
    from mailpki.instance.instance import Instance

    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0

        return wrapper

    authority.load_csr = timed("csr_parse_verify", authority.load_csr)
    authority.check_public_key = timed("policy", authority.check_public_key)
    authority.reserve_serial = timed("db_reserve_serial", authority.reserve_serial)
    authority.build_certificate = timed("build", authority.build_certificate)
    authority.lint_for_signing = timed("lint_total", authority.lint_for_signing)
    Linter.lint = timed("lint_pkilint", Linter.lint)  # type: ignore[method-assign]
    signing.SigningToken.sign = timed("sign", signing.SigningToken.sign)  # type: ignore[method-assign]
    authority.certificate_record = timed("record", authority.certificate_record)
    authority.CertificateAuthority.issue_for_key = timed(  # type: ignore[method-assign]
        "issue_for_key", authority.CertificateAuthority.issue_for_key
    )
    Instance.seal = timed("db_seal_checkpoint", Instance.seal)  # type: ignore[method-assign]

    instance, issue = _issuer(home, path)
    issue(jobs[0][1], jobs[0][0])
    spent.clear()
    t0 = time.perf_counter()
    certificate = None
    for index, csr in jobs[1:]:
        issued = issue(csr, index)
        certificate = issued
    total = time.perf_counter() - t0
    n = len(jobs) - 1
    ms = {name: value * 1000 / n for name, value in spent.items()}
    out: dict[str, float] = {"total": total * 1000 / n}
    out["csr_parse_verify"] = ms.get("csr_parse_verify", 0.0)
    out["db_reserve_serial"] = ms.get("db_reserve_serial", 0.0)
    out["build"] = ms.get("build", 0.0)
    out["lint_pkilint"] = ms.get("lint_pkilint", 0.0)
    # lint_for_signing = throwaway-key signature + DER + pkilint
    out["lint_presign_throwaway"] = ms.get("lint_total", 0.0) - ms.get("lint_pkilint", 0.0)
    out["sign"] = ms.get("sign", 0.0)
    known = sum(
        ms.get(k, 0.0)
        for k in ("policy", "db_reserve_serial", "build", "lint_total", "sign", "record")
    )
    # What is left of issue_for_key: the store + audit transaction (and refusal checks).
    out["db_store_audit"] = ms.get("issue_for_key", 0.0) - known
    out["db_seal_checkpoint"] = ms.get("db_seal_checkpoint", 0.0)
    out["other"] = out["total"] - sum(v for k, v in out.items() if k != "total")

    # pkilint alone on one certificate, repeated (the figure the lint module quotes).
    der = (
        certificate.pem
        if hasattr(certificate, "pem")
        else certificate.certificate.public_bytes(Encoding.PEM)
    )
    from cryptography import x509

    cert_der = x509.load_pem_x509_certificate(der).public_bytes(Encoding.DER)
    linter = instance.ca.linter
    profile = instance.ca.profile(None)
    samples = []
    for _ in range(5):
        t1 = time.perf_counter()
        for _ in range(40):
            linter.lint(cert_der, profile.lint_type)
        samples.append((time.perf_counter() - t1) * 1000 / 40)
    out["lint_one_cert_isolated"] = statistics.median(samples)
    instance.close()
    results.put({k: round(v, 3) for k, v in out.items()})


# -- the parent ------------------------------------------------------------------------------


def run_workers(home: Path, path: str, csrs: list[bytes], workers: int, label: str) -> float:
    """Issue every CSR with `workers` processes; certificates per second."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    counter = ctx.Value("i", 0)
    results = ctx.Queue()
    jobs = list(enumerate(csrs))
    warmups, jobs = jobs[:workers], jobs[workers:]
    procs = [
        ctx.Process(
            target=worker,
            args=(home, path, jobs[i::workers], warmups[i], barrier, counter, results),
            daemon=True,
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(timeout=300)
        with common.Progress(label, len(jobs)) as progress:
            while any(p.is_alive() for p in procs) and counter.value < len(jobs):
                progress.update(counter.value)
                time.sleep(0.2)
            progress.update(counter.value)
        spans = [results.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    if any(p.exitcode for p in procs):
        raise SystemExit(f"a worker failed (exit codes {[p.exitcode for p in procs]})")
    start = min(s for s, _, _ in spans)
    end = max(e for _, e, _ in spans)
    issued = sum(n for _, _, n in spans)
    return issued / (end - start)


def run_breakdown(home: Path, path: str, csrs: list[bytes]) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    base = 1_000_000  # distinct e-mail addresses from the throughput runs
    proc = ctx.Process(
        target=breakdown_worker,
        args=(home, path, [(base + i, c) for i, c in enumerate(csrs)], results),
        daemon=True,
    )
    proc.start()
    try:
        out: dict[str, float] = results.get(timeout=600)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    return out


def bench_key_type(args: argparse.Namespace, key_type: str, workdir: Path) -> dict[str, Any]:
    with common.database_for(args, workdir) as url:
        home = workdir / f"home-{key_type}"
        common.log(f"[{key_type}] new instance in {home} ({common.database_kind(url)})")
        common.create_instance(home, ca_key_type=key_type, database_url=url)
        multi_n = args.count + args.workers
        single_n = max(args.count // args.workers, 50) + 1
        total = multi_n + single_n + args.breakdown
        csrs: list[bytes] = []
        with common.Progress(f"[{key_type}] CSRs (P-256, not timed)", total) as progress:
            for i in range(total):
                csrs.append(common.make_csr(i))
                if i % 100 == 0:
                    progress.update(i)
            progress.update(total)
        out: dict[str, Any] = {"ca_key_type": key_type, "database": common.database_kind(url)}
        if args.workers > 1:
            rate = run_workers(
                home,
                args.path,
                csrs[:multi_n],
                args.workers,
                f"[{key_type}] {args.workers} workers",
            )
            out[f"certs_per_s_{args.workers}_workers"] = round(rate, 1)
            common.log(f"[{key_type}] {args.workers} workers: {rate:.1f} certs/s")
        single = csrs[multi_n : multi_n + single_n]
        rate1 = run_workers(home, args.path, single, 1, f"[{key_type}] 1 worker")
        out["certs_per_s_1_worker"] = round(rate1, 1)
        out["ms_per_cert_1_worker"] = round(1000 / rate1, 2)
        common.log(f"[{key_type}] 1 worker: {rate1:.1f} certs/s ({1000 / rate1:.2f} ms/cert)")
        if args.workers == 1:
            out["certs_per_s_1_workers"] = out["certs_per_s_1_worker"]
        if args.breakdown > 1:
            common.log(f"[{key_type}] per-step breakdown over {args.breakdown - 1} certificates")
            out["breakdown_ms"] = run_breakdown(home, args.path, csrs[multi_n + single_n :])
            common.log(f"[{key_type}] breakdown ms: {out['breakdown_ms']}")
        return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--count", type=int, default=None, help="certificates per run (default 3000)"
    )
    parser.add_argument("--workers", type=int, default=2, help="issuing processes (default 2)")
    parser.add_argument(
        "--ca-key-type",
        choices=(*KEY_TYPES, "all"),
        default="all",
        help="key type of the root and issuing CA (default: both, one after the other)",
    )
    parser.add_argument(
        "--path",
        choices=("ops", "ca"),
        default="ops",
        help="ops: operations.issue_from_csr (seals the audit log per certificate, as the CLI "
        "and web do); ca: Instance.ca.issue_from_csr only",
    )
    parser.add_argument(
        "--breakdown",
        type=int,
        default=None,
        help="certificates for the per-step breakdown (0: skip; default 300)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller run (600 certificates)")
    common.add_database_options(parser)
    args = common.parse_args(parser)
    if args.count is None:
        args.count = 600 if args.quick else 3000
    if args.breakdown is None:
        args.breakdown = 101 if args.quick else 301
    args.breakdown = max(args.breakdown, 0)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    key_types = KEY_TYPES if args.ca_key_type == "all" else (args.ca_key_type,)
    if args.database and len(key_types) > 1:
        parser.error("--database holds one instance: give --ca-key-type p256 or rsa3072")

    runs: dict[str, Any] = {}
    with common.temp_dir("mailpki-bench-issue-") as workdir:
        for key_type in key_types:
            runs[key_type] = bench_key_type(args, key_type, workdir)

    targets = []
    if "p256" in runs:
        rate = runs["p256"].get(f"certs_per_s_{args.workers}_workers")
        targets.append(
            common.target(
                f"issue p256 CA, {args.workers} workers ({runs['p256']['database']})",
                rate,
                "certs/s",
                TARGET_CERTS_PER_S,
                ">=",
            )
        )
    common.emit(
        {
            "benchmark": "bench_issue",
            "path": args.path,
            "workers": args.workers,
            "count": args.count,
            "machine": common.machine(),
            "runs": runs,
            "targets": targets,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
