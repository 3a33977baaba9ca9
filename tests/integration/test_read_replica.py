"""Reads from a real PostgreSQL streaming replica, and the fall back to the primary when it
is down or lags; /readyz says which."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from mailpki.instance.health import check_readiness
from mailpki.instance.instance import Instance
from mailpki.policy.person import Person
from mailpki.store.db import Database
from mailpki.store.replica import ReadRouting
from mailpki.web.server import InstancePKISource
from tests.fixtures.postgres_replica import ReplicaPair
from tests.integration.cli_helpers import mailpki


@pytest.fixture
def routing(postgres_pair: ReplicaPair) -> Iterator[ReadRouting]:
    primary = Database(postgres_pair.primary.url())
    routing = ReadRouting(
        primary, postgres_pair.replica.url(), max_lag=timedelta(seconds=5), check_every=0
    )
    yield routing
    routing.dispose()
    primary.dispose()


def test_reads_go_to_the_replica_while_it_streams(
    postgres_pair: ReplicaPair, routing: ReadRouting
) -> None:
    postgres_pair.wait_streaming()
    state = routing.state(fresh=True)
    assert state.in_use, state.reason
    assert routing.reader() is routing.replica
    assert postgres_pair.sql(postgres_pair.replica, "SELECT pg_is_in_recovery()") == "True"


def test_a_stopped_replica_falls_back_to_the_primary_and_comes_back(
    postgres_pair: ReplicaPair, routing: ReadRouting
) -> None:
    postgres_pair.stop_replica()
    try:
        state = routing.state(fresh=True)
        assert not state.in_use
        assert "unreachable" in state.reason
        assert routing.reader() is routing.primary
    finally:
        postgres_pair.start_replica()
    assert routing.state(fresh=True).in_use


def test_a_lagging_replica_falls_back(postgres_pair: ReplicaPair, routing: ReadRouting) -> None:
    strict = ReadRouting(
        routing.primary, postgres_pair.replica.url(), max_lag=timedelta(0), check_every=0
    )
    postgres_pair.sql(postgres_pair.replica, "SELECT pg_wal_replay_pause()")
    try:
        postgres_pair.sql(postgres_pair.primary, "CREATE TABLE IF NOT EXISTS lag_probe (x int)")
        postgres_pair.sql(postgres_pair.primary, "INSERT INTO lag_probe VALUES (1) RETURNING x")
        postgres_pair.sql(postgres_pair.primary, "SELECT pg_switch_wal()")
        deadline = time.monotonic() + 20  # until the replica has received what it may not replay
        while True:
            state = strict.state(fresh=True)
            if not state.in_use or time.monotonic() > deadline:
                break
            postgres_pair.sql(postgres_pair.primary, "INSERT INTO lag_probe VALUES (2) RETURNING x")
            time.sleep(0.2)
        assert not state.in_use
        assert "lags" in state.reason
        assert strict.reader() is strict.primary
    finally:
        postgres_pair.sql(postgres_pair.replica, "SELECT pg_wal_replay_resume()")
        strict.dispose()
    postgres_pair.wait_streaming()


def test_an_instance_on_a_replica_is_ready_and_says_where_reads_go(
    postgres_pair: ReplicaPair, tmp_path: Path
) -> None:
    import psycopg

    name = f"inst_{tmp_path.name[-12:].replace('-', '_').lower()}"
    with psycopg.connect(postgres_pair.primary.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    home = tmp_path / "corp"
    result = mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--database", postgres_pair.primary.url(name),
    )  # fmt: skip
    assert result.code == 0, result.err
    bad = mailpki("config", "set", "--home", home, "database.read_url", "sqlite:///x.db")
    assert bad.code != 0
    ok = mailpki(
        "config", "set", "--home", home, "database.read_url", postgres_pair.replica.url(name)
    )
    assert ok.code == 0, ok.err
    postgres_pair.wait_streaming()

    instance = Instance.open(home)
    try:
        checks = {c.name: c for c in check_readiness(instance).checks}
        assert checks["replica"].ok and "replica in use" in checks["replica"].detail
        assert instance.read_db() is instance.read_routing.replica  # type: ignore[union-attr]
        postgres_pair.stop_replica()
        try:
            readiness = check_readiness(instance)
            assert readiness.ready  # the primary still serves
            detail = {c.name: c.detail for c in readiness.checks}["replica"]
            assert "reads go to the primary" in detail
            assert instance.read_db() is instance.db
            json.dumps([c.detail for c in readiness.checks])
        finally:
            postgres_pair.start_replica()
    finally:
        instance.close()


def _ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """A nonce'd request: its answer is never cached, so each one reads the status."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    builder = builder.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def _ocsp_status(source: InstancePKISource, request: bytes) -> str:
    response = ocsp.load_der_ocsp_response(source.ocsp(request))
    return response.certificate_status.name


def _crl_number(der: bytes | None) -> int:
    assert der is not None
    return (
        x509.load_der_x509_crl(der)
        .extensions.get_extension_for_class(x509.CRLNumber)
        .value.crl_number
    )


def _mailbox(name: str) -> Person:
    return Person.from_untrusted(name=name.title(), email=f"{name}@example.com")


def test_tolerant_reads_hit_the_replica_and_fall_back_to_the_primary(
    postgres_pair: ReplicaPair, tmp_path: Path
) -> None:
    """With replay paused, writes on the primary are invisible on the replica: OCSP, the
    certificate directory, CRL serving, `certs list` and the people search must not see
    them (they read the replica); once the replica stops, they see them (the primary)."""
    import psycopg

    name = f"rr_{tmp_path.name[-12:].replace('-', '_').lower()}"
    with psycopg.connect(postgres_pair.primary.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    home = tmp_path / "corp"
    result = mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--database", postgres_pair.primary.url(name),
    )  # fmt: skip
    assert result.code == 0, result.err
    for key, value in (
        ("database.read_url", postgres_pair.replica.url(name)),
        ("database.read_max_lag_seconds", "3600"),  # paused replay must not count as lag
    ):
        assert mailpki("config", "set", "--home", home, key, value).code == 0

    writer = Instance.open(home)
    alice = writer.ca.issue_for_key(
        ec.generate_private_key(ec.SECP256R1()).public_key(), _mailbox("alice"), actor="test"
    )
    before = writer.ca.generate_issuing_crl(None, actor="test").number
    writer.seal()
    postgres_pair.wait_streaming()

    reader = Instance.open(home)
    source = InstancePKISource(reader)
    people = tmp_path / "people.csv"
    people.write_text("login,mail,name\nzed,zed@example.com,Zed Zebra\n")
    postgres_pair.sql(postgres_pair.replica, "SELECT pg_wal_replay_pause()", name)
    try:
        # On the primary only: bob's certificate, alice's revocation, a newer CRL, zed.
        bob = writer.ca.issue_for_key(
            ec.generate_private_key(ec.SECP256R1()).public_key(), _mailbox("bob"), actor="test"
        )
        writer.ca.revoke(
            alice.certificate.serial_number, x509.ReasonFlags.key_compromise, actor="test"
        )
        after = writer.ca.generate_issuing_crl(None, actor="test").number
        writer.seal()
        assert after > before
        assert mailpki("directory", "import", "--home", home, people).code == 0
        assert writer.ca.list_certificates(email="bob@example.com")[1] == 1
        assert writer.ca.status(alice.certificate.serial_number).status == "revoked"  # type: ignore[union-attr]

        state = reader.read_routing.state(fresh=True)  # type: ignore[union-attr]
        assert state.in_use, state.reason
        issuing = reader.hierarchy.issuing
        assert _ocsp_status(source, _ocsp_request(alice.certificate, issuing)) == "GOOD"
        assert source.valid_certificates("alice@example.com") != []
        assert source.valid_certificates("bob@example.com") == []
        assert _crl_number(source.crl("issuing.crl")) == before
        assert reader.ca.list_certificates(email="bob@example.com", db=reader.read_db())[1] == 0
        listed = mailpki("certs", "list", "--home", home, "--email", "bob@example.com", "--json")
        assert listed.code == 0, listed.err
        assert json.loads(listed.out) == []
        assert reader.directories.search("zed") == []

        postgres_pair.stop_replica()
        try:
            state = reader.read_routing.state(fresh=True)  # type: ignore[union-attr]
            assert not state.in_use
            assert reader.read_db() is reader.db
            assert _ocsp_status(source, _ocsp_request(alice.certificate, issuing)) == "REVOKED"
            assert source.valid_certificates("alice@example.com") == []
            assert source.valid_certificates("bob@example.com") == [
                bob.certificate.public_bytes(Encoding.DER)
            ]
            assert _crl_number(source.crl("issuing.crl")) == after
            listed = mailpki(
                "certs", "list", "--home", home, "--email", "bob@example.com", "--json"
            )
            assert listed.code == 0, listed.err
            assert [row["email"] for row in json.loads(listed.out)] == ["bob@example.com"]
            assert [entry.login for entry in reader.directories.search("zed")] == ["zed"]
        finally:
            postgres_pair.start_replica()  # a restart also ends the paused replay
    finally:
        with contextlib.suppress(Exception):
            postgres_pair.sql(postgres_pair.replica, "SELECT pg_wal_replay_resume()", name)
        reader.close()
        writer.close()
    postgres_pair.wait_streaming()
