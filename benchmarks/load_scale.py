"""Fill an instance with N issued certificates, their escrow records and audit records.

    python -m benchmarks.load_scale --home H --count 1000000 [--revoked 100000] [--workers 2]

For the scale benchmarks (benchmarks/bench_scale.py). The instance must exist (made by
`mailpki init`, best with `--ca-key-type p256` and `--database postgresql+psycopg://…`).
Every row is what issuance writes, made in bulk:

- a real certificate per row: its own P-256 key, the instance's profile extensions (from a
  certificate the CA issued and linted), its partition's CDP, signed by the issuing key;
  not linted one by one (linting is what the issuance benchmark measures);
- a serial reservation, and an escrow record of realistic size (an RSA-3072 wrap and an
  AES-GCM-encrypted PKCS#8) whose bytes are random: nothing can be recovered from them;
- `cert.issued` and `key.escrowed` audit records (and `cert.revoked` for `--revoked` of
  them), hash-chained onto the instance's log and sealed with a signed checkpoint, so
  `mailpki audit verify` passes afterwards.

PostgreSQL is then vacuumed and analysed (VACUUM ANALYZE) and checkpointed, so what is
measured next does not share the machine with autovacuum catching up on the bulk load.

PostgreSQL is loaded with COPY, SQLite with executemany; certificates are made in
`--workers` processes. Progress goes to stderr; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common

MAIL_DOMAIN = "bench-corp.com"
_WORKER: dict[str, Any] = {}


def _template(home: Path) -> tuple[bytes, int]:
    """One real, linted certificate of the instance's default profile, and the partition
    size: its extensions are the model of every loaded certificate."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding

    from mailpki.instance.instance import Instance
    from mailpki.policy.person import Person

    instance = Instance.open(home)
    try:
        person = Person.from_untrusted(
            email=f"template@{MAIL_DOMAIN}", name="Template Person", given_name="Template",
            surname="Person",
        )  # fmt: skip
        issued = instance.ca.issue_for_key(
            ec.generate_private_key(ec.SECP256R1()).public_key(),
            person,
            profile="mailbox-strict",
            actor="bench:load-scale",
        )
        instance.seal()
        return issued.certificate.public_bytes(Encoding.DER), instance.ca_settings.partition_size
    finally:
        instance.close()


def _init_worker(home: str, template_der: bytes) -> None:
    from cryptography import x509

    from mailpki.instance.instance import Instance

    instance = Instance.open(Path(home))
    _WORKER["key"] = instance.keys.load("issuing")
    _WORKER["issuer"] = instance.hierarchy.issuing.subject
    _WORKER["settings"] = instance.ca_settings
    _WORKER["template"] = x509.load_der_x509_certificate(template_der)


def _make_batch(first: int, count: int, partition_size: int) -> list[tuple[Any, ...]]:
    """(serial_hex, index, email, der, not_before, not_after, partition) per certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtensionOID, NameOID

    template: x509.Certificate = _WORKER["template"]
    settings = _WORKER["settings"]
    rows = []
    now = datetime.now(UTC).replace(microsecond=0)
    for index in range(first, first + count):
        email = f"user{index:08d}@{MAIL_DOMAIN}"
        partition = index // partition_size
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        serial = secrets.randbits(126) | (1 << 126)
        not_before = now - timedelta(days=index % 700)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)]))
            .issuer_name(_WORKER["issuer"])
            .public_key(key)
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_before + timedelta(days=730))
        )
        urls = settings.urls_for_partition(partition)
        for extension in template.extensions:
            value: Any = extension.value
            if extension.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
                value = x509.SubjectAlternativeName([x509.RFC822Name(email)])
            elif extension.oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
                value = x509.SubjectKeyIdentifier.from_public_key(key)
            elif extension.oid == ExtensionOID.CRL_DISTRIBUTION_POINTS:
                value = x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier(urls.crl)], None, None, None
                        )
                    ]
                )
            builder = builder.add_extension(value, extension.critical)
        der = builder.sign(_WORKER["key"], hashes.SHA256()).public_bytes(Encoding.DER)
        rows.append(
            (
                format(serial, "X"),
                index,
                email,
                der,
                not_before,
                not_before + timedelta(days=730),
                partition,
            )
        )
    return rows


def _audit_rows(
    head_seq: int, head_hash: str, events: list[tuple[str, dict[str, Any]]], when: str
) -> tuple[list[tuple[Any, ...]], int, str]:
    from mailpki.audit.log import canonical, record_hash

    rows = []
    seq, prev = head_seq, head_hash
    for event, data in events:
        seq += 1
        digest = record_hash(prev, seq, when, event, "bench:load-scale", data)
        rows.append((seq, when, event, "bench:load-scale", canonical(data).decode(), prev, digest))
        prev = digest
    return rows, seq, prev


class _Writer:
    """COPY on PostgreSQL, executemany on SQLite; one transaction per batch."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql")
        if self.postgres:
            import psycopg
            from sqlalchemy.engine import make_url

            parsed = make_url(url)
            self.conn: Any = psycopg.connect(
                host=parsed.host, port=parsed.port, user=parsed.username,
                password=parsed.password, dbname=parsed.database,
            )  # fmt: skip
        else:
            import sqlite3

            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=60)

    def write(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.postgres:
            with self.conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in columns)
            self.conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                [tuple(_sqlite(v) for v in row) for row in rows],
            )

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        if self.postgres:
            return self.conn.execute(sql.replace("?", "%s"), params)
        return self.conn.execute(sql, params)

    def commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


def _sqlite(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return value


def load(home: Path, count: int, revoked: int, workers: int, batch: int) -> dict[str, Any]:
    from cryptography import x509

    from mailpki.base.crl_entry import encode_entry
    from mailpki.instance.instance import Instance

    template_der, partition_size = _template(home)
    instance = Instance.open(home)
    url = instance.config.database_url
    krs_key_id = instance.transport_key.key_id
    instance.close()
    writer = _Writer(url)
    head = writer.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    head_seq, head_hash = int(head[0]), str(head[1])
    start_index = int(writer.execute("SELECT COUNT(*) FROM certificates").fetchone()[0])
    started = time.perf_counter()
    revoke_every = max(1, count // revoked) if revoked else 0
    made = 0
    with (
        ProcessPoolExecutor(
            workers, initializer=_init_worker, initargs=(str(home), template_der)
        ) as pool,
        common.Progress("certificates", count) as progress,
    ):
        chunks = [
            (start_index + first, min(batch, count - first), partition_size)
            for first in range(0, count, batch)
        ]
        for rows in pool.map(_make_batch, *zip(*chunks, strict=True)):
            now = datetime.now(UTC)
            when = now.isoformat()
            serial_rows, cert_rows, escrow_rows, events = [], [], [], []
            for serial, index, email, der, not_before, not_after, partition in rows:
                is_revoked = bool(revoke_every) and index % revoke_every == 0
                fingerprint = hashlib.sha256(der).hexdigest()
                serial_rows.append((serial, "issuing", now))
                cert_rows.append((
                    serial, "issuing", f"CN={email}", email, "mailbox-strict", not_before,
                    not_after, fingerprint, der, "revoked" if is_revoked else "valid",
                    now if is_revoked else None, "key_compromise" if is_revoked else None,
                    partition, now,
                    # What revoke() stores: the CRL entry, encoded once.
                    encode_entry(int(serial, 16), now, x509.ReasonFlags.key_compromise)
                    if is_revoked else None,
                ))  # fmt: skip
                escrow_rows.append((
                    serial, email, "p256", secrets.token_hex(32), krs_key_id, "sha256",
                    os.urandom(384), os.urandom(12), os.urandom(154), "delivered", now, now, now,
                ))  # fmt: skip
                events.append(("cert.issued", {
                    "serial": serial, "subject": f"CN={email}", "email": email,
                    "profile": "mailbox-strict", "fingerprint": fingerprint,
                    "not_after": not_after.isoformat(),
                }))  # fmt: skip
                events.append(("key.escrowed", {
                    "serial": serial, "email": email, "key_type": "p256",
                    "krs_key_id": krs_key_id, "from_pool": False,
                }))  # fmt: skip
                if is_revoked:
                    events.append(("cert.revoked", {
                        "serial": serial, "reason": "key_compromise", "email": email,
                    }))  # fmt: skip
            audit, head_seq, head_hash = _audit_rows(head_seq, head_hash, events, when)
            writer.write("serials", ("serial", "issuer", "reserved_at"), serial_rows)
            writer.write(
                "certificates",
                ("serial", "issuer", "subject", "email", "profile", "not_before", "not_after",
                 "fingerprint", "der", "status", "revoked_at", "revocation_reason",
                 "crl_partition", "created_at", "crl_entry_der"),
                cert_rows,
            )  # fmt: skip
            writer.write(
                "escrowed_keys",
                ("serial", "owner_email", "key_type", "spki_sha256", "krs_key_id", "oaep_hash",
                 "wrapped_key", "nonce", "ciphertext", "state", "lease_until", "created_at",
                 "delivered_at"),
                escrow_rows,
            )  # fmt: skip
            writer.write(
                "audit_records",
                ("seq", "time", "event", "actor", "data", "prev_hash", "hash"),
                audit,
            )
            writer.execute(
                "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (head_seq, head_hash)
            )
            writer.commit()
            made += len(rows)
            progress.update(made)
    if writer.postgres:
        # Leave the database as steady issuance would: COPY leaves every new row without
        # hint bits or visibility-map entries, and a bare ANALYZE leaves that debt to
        # autovacuum's insert-triggered VACUUM, which then starts within a minute and
        # runs through the measurements (2 s per big table at 100,000 rows, throttled I/O
        # that grows with the rows).
        # The CHECKPOINT writes the loaded pages out now rather than during them.
        writer.conn.autocommit = True
        writer.execute("VACUUM ANALYZE")
        import psycopg

        # Without superuser or pg_checkpoint the checkpointer does it in its own time.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            writer.execute("CHECKPOINT")
    writer.close()
    seconds = time.perf_counter() - started
    instance = Instance.open(home)
    try:
        instance.seal()  # a signed checkpoint over everything loaded
    finally:
        instance.close()
    return {"loaded": made, "revoked": (made // revoke_every) if revoke_every else 0,
            "seconds": round(seconds, 1), "per_second": round(made / seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home", type=Path, required=True, help="An instance made by mailpki init."
    )
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--revoked", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args()
    if args.count < 1 or args.revoked < 0 or args.revoked > args.count or args.batch < 1:
        parser.error("--count ≥ 1, 0 ≤ --revoked ≤ --count, --batch ≥ 1")
    result = load(args.home, args.count, args.revoked, args.workers, args.batch)
    common.log(f"loaded {result['loaded']:,} certificates in {result['seconds']} s")
    print(json.dumps({"benchmark": "load_scale", **result}))


if __name__ == "__main__":
    main()
