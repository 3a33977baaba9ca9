"""The LDAP directory: certificate publication, logon, address-list search, the outbox.

Starts the same throwaway OpenLDAP slapd as the tests (tests/fixtures/slapd.py:
10,000 inetOrgPerson entries, ppolicy and memberof overlays, TLS with its own CA)
and a throwaway instance (P-256 CA, SQLite) with that directory added over ldaps://
(``--transport starttls`` for StartTLS), the way ``mailpki directory add`` does it.
Then, each on the real code path:

  publish   ``LdapDirectory.publish_many`` of N pre-made P-256 certificates (made with
            cryptography before timing) to N different entries: read the entry, add
            userCertificate;binary and a PKCS#7 userSMIMECertificate -> certs/s
  logon     ``Instance.directory_logon.authenticate`` (the portal's logon: lockout
            check in the database, routing lookup through the registry, a bind as the
            person on a fresh TLS connection, lockout reset) for random users with
            passwords (set before timing) -> p50/p95 ms; the lookup + bind alone too
  search    ``LdapDirectory.search(prefix, limit=50)`` with random 2-4 letter prefixes
            of names, logins and mails -> p50/p95 ms
  outbox    N certificates issued through ``operations.issue_from_csr`` (each queues
            its publication job in the issuing transaction; not timed), then one
            ``Publisher.run_once`` delivers them all -> jobs/s (info)

    python -m benchmarks.bench_directory                  # 2,000 certs, 500 logons/searches
    python -m benchmarks.bench_directory --quick          # smaller outbox run
    python -m benchmarks.bench_directory --certs 5000 --logons 2000 --transport starttls

Targets: publish >= 500 certs/s; logon and search p95 <= 20 ms.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common

TARGET_PUBLISH_PER_S = 500.0
TARGET_P95_MS = 20.0
DIRECTORY = "bench-ldap"
LOGON_USERS = 200
LOGON_FIRST = 5000  # bulk users LOGON_FIRST .. + LOGON_USERS get a password
WARMUP = 20


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(percentile(ordered, 0.95), 3),
        "p99_ms": round(percentile(ordered, 0.99), 3),
        "max_ms": round(ordered[-1], 3),
    }


def ssha(password: str) -> str:
    """An OpenLDAP {SSHA} userPassword value (what slappasswd makes by default)."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


# -- set-up ------------------------------------------------------------------------------------


def certificates(count: int) -> list[bytes]:
    """`count` DER leaf certificates from one throwaway P-256 CA (one leaf key: fast)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench Directory CA")])
    now = dt.datetime.now(dt.UTC)
    out = []
    for n in range(count):
        mail = f"publish{n}@example.com"
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, mail)]))
            .issuer_name(issuer)
            .public_key(leaf_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(mail)]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        out.append(cert.public_bytes(Encoding.DER))
    return out


def set_passwords(server: Any, logins: list[str], password: str) -> None:
    import ldap3

    conn = ldap3.Connection(
        ldap3.Server(server.host, port=server.port, get_info=ldap3.NONE),
        server.admin_dn,
        server.admin_password,
        auto_bind=True,
    )
    try:
        for login in logins:
            conn.modify(
                f"uid={login},{server.people_dn}",
                {"userPassword": [(ldap3.MODIFY_REPLACE, [ssha(password)])]},
            )
            if conn.result["result"] != 0:
                raise SystemExit(f"cannot set the password of {login}: {conn.result}")
    finally:
        conn.unbind()


def open_instance(home: Path, server: Any, transport: str) -> Any:
    from mailpki.directory.registry import DirectorySettings
    from mailpki.instance import directory_ops
    from mailpki.instance.instance import Instance

    common.create_instance(home, ca_key_type="p256", database_url=None)
    instance = Instance.open(home)
    starttls = transport == "starttls"
    directory_ops.add_directory(
        instance,
        DirectorySettings(
            name=DIRECTORY,
            flavour="openldap",
            url=server.url if starttls else server.ldaps_url,
            base_dn=server.base_dn,
            bind_dn=server.bind_dn,
            bind_password_file=str(server.bind_password_file),
            domains=tuple(server.domains),
            starttls=starttls,
            ca_file=str(server.ca_file),
            timeout_seconds=5,
        ),
        actor="bench",
    )
    return instance


# -- the measurements --------------------------------------------------------------------------


def bench_publish(directory: Any, server: Any, count: int) -> dict[str, Any]:
    common.log(f"making {count:,} P-256 certificates (not timed)")
    ders = certificates(count)
    dns = [f"uid={server.bulk_login(n)},{server.people_dn}" for n in range(count)]
    items = list(zip(dns, ders, strict=True))
    common.log(f"publish_many: {count:,} certificates to {count:,} entries")
    t0 = time.perf_counter()
    done = directory.publish_many(items)
    elapsed = time.perf_counter() - t0
    if done != count:
        raise SystemExit(f"publish_many published to {done} entries, not {count}")
    for dn, der in random.Random(1).sample(items, 20):
        if directory.certificates(dn) != [der]:
            raise SystemExit(f"{dn}: the published certificate is not there")
    rate = count / elapsed
    common.log(f"  {count:,} in {elapsed:.2f} s: {rate:,.0f} certs/s")
    return {"certs": count, "seconds": round(elapsed, 3), "certs_per_s": round(rate, 1)}


def bench_logon(instance: Any, directory: Any, server: Any, runs: int) -> dict[str, Any]:
    password = "Bench-Logon-Pass-1"  # a throwaway directory's test users
    logins = [server.bulk_login(LOGON_FIRST + n) for n in range(LOGON_USERS)]
    common.log(f"setting passwords of {LOGON_USERS} users (not timed)")
    set_passwords(server, logins, password)
    logon = instance.directory_logon
    rng = random.Random(2)
    for login in logins[:WARMUP]:
        identity = logon.authenticate(login, password, source="bench")
        assert identity.entry.login == login
    full: list[float] = []
    bare: list[float] = []
    clock = time.perf_counter
    with common.Progress("logons", runs) as progress:
        for n in range(runs):
            login = rng.choice(logins)
            t0 = clock()
            identity = logon.authenticate(login, password, source="bench")
            full.append((clock() - t0) * 1000)
            if identity.entry.login != login:
                raise SystemExit(f"logon as {login} gave {identity.entry.login}")
            # The directory's part alone: the lookup and the bind as the person.
            t0 = clock()
            entry = directory.find_by_login(login)
            ok = directory.verify_password(entry, password)
            bare.append((clock() - t0) * 1000)
            if not ok:
                raise SystemExit(f"the bind as {login} was refused")
            if n % 50 == 0:
                progress.update(n)
        progress.update(runs)
    result = {"runs": runs, "users": LOGON_USERS, **summary(full)}
    result["directory_only"] = summary(bare)
    common.log(
        f"  logon p50 {result['p50_ms']:.2f} ms, p95 {result['p95_ms']:.2f} ms "
        f"(lookup + bind alone: p50 {result['directory_only']['p50_ms']:.2f} ms, "
        f"p95 {result['directory_only']['p95_ms']:.2f} ms)"
    )
    return result


def search_prefixes(directory: Any, runs: int) -> list[str]:
    """Varied 2-4 letter prefixes, as people type them into the address list: drawn
    evenly from the distinct prefixes of the given names, surnames, logins and mail
    addresses of a sample of entries, plus one in five random letter pairs and
    triples (typos: few or no results)."""
    rng = random.Random(3)
    words: set[str] = set()
    for start in "abcdefghijklmnopqrstuvwxyz":
        for entry in directory.search(start, limit=100):
            words.update(w for w in (entry.given_name, entry.surname, entry.login) if w)
            if entry.mail:
                words.add(entry.mail)
    known = sorted({w[:n].lower() for w in words for n in (2, 3, 4) if len(w) >= n})
    letters = "abcdefghijklmnopqrstuvwxyz"
    prefixes = []
    for _ in range(runs):
        if rng.random() < 0.2:
            prefixes.append("".join(rng.choice(letters) for _ in range(rng.randint(2, 3))))
        else:
            prefixes.append(rng.choice(known))
    return prefixes


def bench_search(directory: Any, runs: int) -> dict[str, Any]:
    prefixes = search_prefixes(directory, runs)
    for prefix in prefixes[:WARMUP]:
        directory.search(prefix, limit=50)
    timings: list[float] = []
    found: list[int] = []
    clock = time.perf_counter
    with common.Progress("searches", runs) as progress:
        for n, prefix in enumerate(prefixes):
            t0 = clock()
            entries = directory.search(prefix, limit=50)
            timings.append((clock() - t0) * 1000)
            found.append(len(entries))
            if n % 50 == 0:
                progress.update(n)
        progress.update(runs)
    if not any(found):
        raise SystemExit("no search found anything: the prefixes are wrong")
    result = {
        "runs": runs,
        "distinct_prefixes": len(set(prefixes)),
        "mean_results": round(statistics.fmean(found), 1),
        "full_pages": sum(1 for f in found if f == 50),
        **summary(timings),
    }
    common.log(
        f"  search p50 {result['p50_ms']:.2f} ms, p95 {result['p95_ms']:.2f} ms "
        f"({result['distinct_prefixes']} prefixes, {result['mean_results']} results on average)"
    )
    return result


def bench_outbox(instance: Any, server: Any, jobs: int, first: int) -> dict[str, Any]:
    from mailpki.instance import operations

    domain = server.domains[0]
    csrs = [common.make_csr(n) for n in range(jobs)]
    with common.Progress(f"issuing {jobs:,} certificates (not timed)", jobs) as progress:
        for n, csr in enumerate(csrs):
            login = server.bulk_login(first + n)
            operations.issue_from_csr(
                instance,
                csr,
                name=f"Bench {login}",
                given_name="Bench",
                surname=login,
                email=f"{login}@{domain}",
                organisation=None,
                site=None,
                profile=None,
                actor="bench",
            )
            if n % 20 == 0:
                progress.update(n)
        progress.update(jobs)
    publisher = instance.publisher
    if publisher.pending() != jobs:
        raise SystemExit(f"{publisher.pending()} jobs queued, not {jobs}")
    t0 = time.perf_counter()
    report = publisher.run_once(limit=jobs)
    elapsed = time.perf_counter() - t0
    if report.published != jobs or report.failed or publisher.pending():
        raise SystemExit(f"the outbox run did not deliver every job: {report}")
    directory = instance.directories.named(DIRECTORY)
    sample = server.bulk_login(first)
    if len(directory.certificates(f"uid={sample},{server.people_dn}")) != 1:
        raise SystemExit(f"{sample}: the certificate was not published")
    rate = jobs / elapsed
    common.log(f"  {jobs:,} jobs delivered in {elapsed:.2f} s: {rate:,.0f} jobs/s")
    return {"jobs": jobs, "seconds": round(elapsed, 3), "jobs_per_s": round(rate, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--certs", type=int, default=2000, help="published (at least 2000)")
    parser.add_argument("--logons", type=int, default=500, help="timed logons (at least 500)")
    parser.add_argument("--searches", type=int, default=500, help="timed searches (>= 500)")
    parser.add_argument("--jobs", type=int, default=500, help="outbox jobs (at least 50)")
    parser.add_argument("--quick", action="store_true", help="200 outbox jobs")
    parser.add_argument("--transport", choices=("ldaps", "starttls"), default="ldaps")
    args = common.parse_args(parser)
    certs = max(2000, args.certs)
    logons = max(500, args.logons)
    searches = max(500, args.searches)
    jobs = 200 if args.quick else max(50, args.jobs)
    if certs + jobs > LOGON_FIRST:
        raise SystemExit(f"--certs + --jobs must stay below {LOGON_FIRST} (distinct entries)")

    from tests.fixtures.slapd import OPENLDAP_USERS, missing_slapd, running_slapd

    reason = missing_slapd()
    if reason is not None:
        raise SystemExit(f"cannot start slapd: {reason}")
    common.log(f"starting a throwaway slapd with {OPENLDAP_USERS:,} users")
    with running_slapd("openldap") as server, common.temp_dir("mailpki-bench-dir-") as tmp:
        instance = open_instance(tmp / "home", server, args.transport)
        try:
            directory = instance.directories.named(DIRECTORY)
            publish = bench_publish(directory, server, certs)
            logon = bench_logon(instance, directory, server, logons)
            search = bench_search(directory, searches)
            outbox = bench_outbox(instance, server, jobs, first=certs)
        finally:
            instance.close()

    print(
        f"directory ({args.transport}, {OPENLDAP_USERS:,} entries): publish_many "
        f"{publish['certs_per_s']:,.0f} certs/s; logon p50 {logon['p50_ms']:.2f} / p95 "
        f"{logon['p95_ms']:.2f} ms; search p50 {search['p50_ms']:.2f} / p95 "
        f"{search['p95_ms']:.2f} ms; outbox {outbox['jobs_per_s']:,.0f} jobs/s"
    )
    common.emit(
        {
            "benchmark": "bench_directory",
            "transport": args.transport,
            "entries": OPENLDAP_USERS,
            "machine": common.machine(),
            "publish": publish,
            "logon": logon,
            "search": search,
            "outbox": outbox,
            "peak_rss_mb": round(common.peak_rss_mb(), 1),
            "targets": [
                common.target(
                    f"publish_many {certs:,} certificates",
                    publish["certs_per_s"],
                    "certs/s",
                    TARGET_PUBLISH_PER_S,
                    ">=",
                ),
                common.target(
                    f"logon + lookup p95 ({logons} logons)",
                    logon["p95_ms"],
                    "ms",
                    TARGET_P95_MS,
                    "<=",
                ),
                common.target(
                    f"search limit 50 p95 ({searches} prefixes)",
                    search["p95_ms"],
                    "ms",
                    TARGET_P95_MS,
                    "<=",
                ),
                {
                    "name": f"outbox run_once, {jobs} jobs (info)",
                    "value": outbox["jobs_per_s"],
                    "unit": "jobs/s",
                    "target": None,
                    "op": "",
                    "ok": None,
                },
            ],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
