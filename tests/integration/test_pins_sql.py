"""`mailpki pins import --from-sql`: HR PINs read from a real PostgreSQL HR database."""

from __future__ import annotations

import json
import socket
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import tomli_w
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.pool import NullPool

from mailpki.errors import AuthenticationError
from mailpki.instance.instance import Instance
from tests.fixtures.postgres import PostgresServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

PINS = {"E1001": "482913", "E1002": "Tr7-pin-7392"}
BAD_PINS = ("615243", "908172")  # on rows refused for another reason: must not be stored either
QUERY = (
    "SELECT 'E' || emp_no AS employee_id, email AS mail, full_name AS name, pin "
    "FROM hr_people WHERE active ORDER BY id"
)


@pytest.fixture
def hr(postgres_server: PostgresServer) -> Iterator[tuple[str, str]]:
    """A separate HR database on the test server: (SQLAlchemy URL, libpq conninfo)."""
    name = f"hr_{uuid.uuid4().hex}"
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    conninfo = postgres_server.conninfo(name)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE hr_people (id serial PRIMARY KEY, emp_no integer, email text, "
            "full_name text, pin text, salary integer, active boolean)"
        )
        rows = [
            (1001, "ann@example.com", "Ann Archer", PINS["E1001"], True),
            (1002, "ben@example.com", "Ben Baker", PINS["E1002"], True),
            (1003, "not-a-mail", "Cat Cole", BAD_PINS[0], True),  # bad mail
            (1004, "dan@example.com", "Dan Dyer", "12", True),  # short PIN
            (1001, "eve@example.com", "Eve Ellis", BAD_PINS[1], True),  # duplicate id
            (1005, "fay@example.com", "Fay Ford", None, True),  # no PIN at all
            (1006, "gus@example.com", "Gus Gone", "771100", False),  # left: not selected
        ]
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO hr_people (emp_no, email, full_name, pin, salary, active) "
                "VALUES (%s, %s, %s, %s, 50000, %s)",
                rows,
            )
        # A SELECT can still write through a function: the read-only transaction stops it.
        conn.execute(
            "CREATE FUNCTION hr_wipe() RETURNS boolean LANGUAGE plpgsql AS "
            "$$ BEGIN DELETE FROM hr_people; RETURN true; END $$"
        )
    try:
        yield postgres_server.url(name), conninfo
    finally:
        with psycopg.connect(postgres_server.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_home(tmp_path: Path, postgres_database: str) -> Path:
    target = tmp_path / "corp"
    result = mailpki(
        "init", "--home", target, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--database", postgres_database, "--org-id", "NTRGB-12345678",
    )  # fmt: skip
    assert result.code == 0, result.err
    return target


def hr_rows(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT count(*) FROM hr_people").fetchone()
    assert row is not None
    return int(row[0])


def configure(home: Path, url: str, query: str = QUERY) -> None:
    for key, value in (("pins.sql_url", url), ("pins.sql_query", query)):
        result = mailpki("config", "set", key, value, "--home", home)
        assert result.code == 0, result.err


def every_value(url: str) -> str:
    """All rows of all tables of the instance database, as text."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(
                repr(tuple(row))
                for table in meta.sorted_tables
                for row in conn.execute(select(table))
            )
    finally:
        engine.dispose()


def test_pins_from_sql_are_hashed_counted_and_used_once(
    pg_home: Path, postgres_database: str, hr: tuple[str, str]
) -> None:
    url, conninfo = hr
    configure(pg_home, url)
    result = mailpki("pins", "import", "--home", pg_home, "--from-sql")
    assert result.code == 1, result
    assert "2 PINs added, 0 replaced, 4 refused" in result.out
    lines = result.err.strip().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["row 3", "row 4", "row 5", "row 6"]
    assert "employee id 'E1001' is already on row 1" in lines[2]
    for pin in (*PINS.values(), *BAD_PINS):
        assert pin not in result.err and pin not in result.out

    stored = every_value(postgres_database)
    assert stored.count("$argon2id$") >= 2
    for pin in (*PINS.values(), *BAD_PINS):
        assert pin not in stored
    assert hr_rows(conninfo) == 7  # the HR side is only read

    instance = Instance.open(pg_home)
    try:
        identity = instance.pin_logon.authenticate("E1001", PINS["E1001"], source="test")
        assert identity.method == "pin" and identity.entry.mail == "ann@example.com"
        assert identity.entry.display_name == "Ann Archer"
        with pytest.raises(AuthenticationError, match="already used"):
            instance.pin_logon.authenticate("E1001", PINS["E1001"], source="test")
        assert instance.pin_logon.authenticate("ben@example.com", PINS["E1002"]).entry.login == (
            "E1002"
        )
    finally:
        instance.close()

    engine = create_engine(postgres_database, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            data = conn.exec_driver_sql(
                "SELECT data FROM audit_records WHERE event = 'pins.imported'"
            ).scalar_one()
    finally:
        engine.dispose()
    assert json.loads(data) == {"added": 2, "replaced": 0, "errors": 4, "source": "sql"}

    again = mailpki("pins", "import", "--home", pg_home, "--from-sql")
    assert "0 PINs added, 2 replaced, 4 refused" in again.out


def test_a_writing_query_is_refused_before_it_runs(pg_home: Path, hr: tuple[str, str]) -> None:
    url, conninfo = hr
    configure(pg_home, url)
    for query, reason in (
        (f"{QUERY}; DELETE FROM hr_people", "without ';'"),
        ("UPDATE hr_people SET pin = '000000' RETURNING emp_no", "must start with SELECT"),
        ("DELETE FROM hr_people RETURNING *", "must start with SELECT"),
    ):
        result = mailpki("config", "set", "pins.sql_query", query, "--home", pg_home)
        assert result.code != 0 and reason in result.err, result
    assert mailpki("config", "get", "pins.sql_query", "--home", pg_home).out.strip() == QUERY

    # Edited into config.toml by hand: the instance does not even load.
    config = pg_home / "config.toml"
    values = tomllib.loads(config.read_text())
    values["pins"]["sql_query"] = f"{QUERY}; DELETE FROM hr_people"
    config.write_text(tomli_w.dumps(values))
    result = mailpki("pins", "import", "--home", pg_home, "--from-sql")
    assert result.code != 0 and "invalid value for 'pins.sql_query'" in result.err, result
    assert hr_rows(conninfo) == 7


def test_a_select_that_writes_is_stopped_by_the_read_only_transaction(
    pg_home: Path, hr: tuple[str, str]
) -> None:
    url, conninfo = hr
    configure(pg_home, url, f"{QUERY.replace('WHERE active', 'WHERE active AND hr_wipe()')}")
    result = mailpki("pins", "import", "--home", pg_home, "--from-sql")
    assert result.code == 1, result
    assert "the HR query failed" in result.err and "read-only transaction" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert hr_rows(conninfo) == 7


def test_a_url_with_a_password_is_refused(pg_home: Path) -> None:
    for url in (
        "postgresql+psycopg://hr:Hunter2Secret@db.example.com/hr",
        "postgresql+psycopg://hr@db.example.com/hr?password=Hunter2Secret",
    ):
        result = mailpki("config", "set", "pins.sql_url", url, "--home", pg_home)
        assert result.code != 0 and "~/.pgpass" in result.err, result
        assert "Hunter2Secret" not in result.err + result.out
    assert "Hunter2Secret" not in (pg_home / "config.toml").read_text()


def test_missing_columns_are_named(pg_home: Path, hr: tuple[str, str]) -> None:
    url, _ = hr
    configure(pg_home, url, "SELECT 'E' || emp_no AS employee_id, email AS mail FROM hr_people")
    result = mailpki("pins", "import", "--home", pg_home, "--from-sql")
    assert result.code == 2, result
    assert "the HR query lacks the column(s) name, pin" in result.err


def test_an_unreachable_hr_database_fails_quickly(pg_home: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configure(pg_home, f"postgresql+psycopg://hr_reader@127.0.0.1:{port}/hr")
    started = time.monotonic()
    result = mailpki("pins", "import", "--home", pg_home, "--from-sql")
    assert time.monotonic() - started < 10
    assert result.code == 1, result
    where = f"postgresql+psycopg://hr_reader@127.0.0.1:{port}/hr"
    assert f"cannot connect to the HR database {where}: " in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_pins_import_takes_exactly_one_source(sqlite_home: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "pins.csv"
    csv_file.write_text("employee_id,mail,name,pin\nE1,ann@example.com,Ann,482913\n")
    both = mailpki("pins", "import", "--home", sqlite_home, "--from-sql", csv_file)
    assert both.code == 2 and "either a PIN file or --from-sql, not both" in both.err
    neither = mailpki("pins", "import", "--home", sqlite_home)
    assert neither.code == 2 and "give a PIN file" in neither.err
    unset = mailpki("pins", "import", "--home", sqlite_home, "--from-sql")
    assert unset.code == 1 and "pins.sql_url and pins.sql_query not set" in unset.err
    by_file = mailpki("pins", "import", "--home", sqlite_home, csv_file)
    assert by_file.code == 0 and "1 PINs added, 0 replaced, 0 refused" in by_file.out
