"""HR PINs from a SQL query: the checks of the URL and query, rows_from_sql on SQLite,
and import_pin_rows sharing the CSV import's validation."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from mailpki.auth.pins import (
    PIN_COLUMNS,
    check_sql_query,
    check_sql_url,
    import_pin_rows,
    import_pins,
    rows_from_sql,
)
from mailpki.errors import ConfigError, InputError, StoreError
from mailpki.instance.config import Config
from mailpki.store.db import Database
from mailpki.store.models import HRPin

VALIDITY = timedelta(days=14)
QUERY = "SELECT employee_id, mail, name, pin FROM people ORDER BY n"


def cheap() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


# --- the query ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "SELECT employee_id, mail, name, pin FROM hr.people",
        "  select employee_id, mail, name, pin from people  ",
        "SELECT\n  e.id AS employee_id,\n\te.mail, e.name, e.pin\nFROM e WHERE e.mail LIKE '%@x'",
        "SELECT(1) AS employee_id, 'a@b.c' AS mail, 'n' AS name, '123456' AS pin",
    ],
)
def test_a_single_select_is_accepted(query: str) -> None:
    assert check_sql_query(query) == query.strip()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELECT employee_id, mail, name, pin FROM people; DELETE FROM people", "without ';'"),
        ("SELECT employee_id, mail, name, pin FROM people;", "without ';'"),
        ("SELECT 1 AS x WHERE 'a;b' = 'a;b'", "without ';'"),  # no SQL parser: any ';' is out
        ("UPDATE people SET pin = '000000'", "must start with SELECT"),
        ("DELETE FROM people", "must start with SELECT"),
        ("WITH d AS (DELETE FROM people RETURNING *) SELECT * FROM d", "must start with SELECT"),
        ("selectx FROM people", "must start with SELECT"),
        ("-- note\nSELECT 1", "must start with SELECT"),
        ("SELECT 1\x00", "control characters"),
        ("SELECT " + "x" * 10_000, "longer than 10000"),
    ],
)
def test_anything_else_is_refused(query: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        check_sql_query(query)


def test_empty_means_unset() -> None:
    assert check_sql_query("  ") == "" and check_sql_url("") == ""


# --- the URL --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://hr_reader@db.example.com/hr",
        "postgresql+psycopg://hr_reader@db:5433/hr?sslmode=verify-full&passfile=/etc/mailpki/pgpass",
        "sqlite:////srv/hr/hr.db",
    ],
)
def test_a_url_without_password_is_accepted(url: str) -> None:
    assert check_sql_url(f" {url} ") == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://hr:Hunter2Secret@db/hr",
        "postgresql+psycopg://hr:@db/hr",
        "postgresql+psycopg://hr@db/hr?sslmode=require&PASSWORD=Hunter2Secret",
    ],
)
def test_a_url_with_a_password_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigError, match=r"~/\.pgpass") as info:
        check_sql_url(url)
    assert "Hunter2Secret" not in str(info.value) and "hr@" not in str(info.value)


def test_a_malformed_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="not an SQLAlchemy URL") as info:
        check_sql_url("hr:Hunter2Secret at db")
    assert "Hunter2Secret" not in str(info.value)


def test_the_settings_use_these_checks(tmp_path: Path) -> None:
    config = Config.create(tmp_path, {})
    assert config.get("pins.sql_url") == "" and config.get("pins.sql_query") == ""
    assert config.set("pins.sql_query", f" {QUERY} ") == QUERY
    with pytest.raises(ConfigError, match=r"invalid value for 'pins\.sql_url'.*pgpass") as info:
        config.set("pins.sql_url", "postgresql+psycopg://hr:Hunter2Secret@db/hr")
    assert "Hunter2Secret" not in str(info.value)
    with pytest.raises(ConfigError, match=r"invalid value for 'pins\.sql_query'.*';'"):
        config.set("pins.sql_query", f"{QUERY}; DROP TABLE people")
    config.save()
    assert Config.load(tmp_path).get("pins.sql_query") == QUERY


# --- rows_from_sql on SQLite ----------------------------------------------------------


@pytest.fixture
def hr_url(tmp_path: Path) -> str:
    path = tmp_path / "hr.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE people (n INTEGER, employee_id, mail TEXT, name TEXT, pin, salary)"
        )
        conn.executemany(
            "INSERT INTO people VALUES (?, ?, ?, ?, ?, ?)",
            [
                (1, "E1", "ann@example.com", "Ann", "Pin-111111", 1),
                (2, 1002, "ben@example.com", "Ben 100%", 222222, 2),  # numbers become text
                (3, "E3", "cat@example.com", None, b"Pin-333333", 3),  # None becomes ""
            ],
        )
    conn.close()
    return f"sqlite:///{path}"


def test_rows_come_back_as_text(hr_url: str) -> None:
    rows = rows_from_sql(hr_url, QUERY)
    assert rows == [
        {"employee_id": "E1", "mail": "ann@example.com", "name": "Ann", "pin": "Pin-111111"},
        {"employee_id": "1002", "mail": "ben@example.com", "name": "Ben 100%", "pin": "222222"},
        {"employee_id": "E3", "mail": "cat@example.com", "name": "", "pin": "Pin-333333"},
    ]


def test_percent_and_colon_reach_the_database_as_written(hr_url: str) -> None:
    # Neither is a placeholder: the query text goes to the driver untouched.
    query = (
        "SELECT employee_id, mail, name || ':x' AS name, pin FROM people "
        "WHERE name LIKE '%100\\%%' ESCAPE '\\' OR mail LIKE 'ann@%' ORDER BY n"
    )
    assert [r["name"] for r in rows_from_sql(hr_url, query)] == ["Ann:x", "Ben 100%:x"]


def test_columns_are_matched_case_insensitively_in_any_order(hr_url: str) -> None:
    query = "SELECT pin AS PIN, name AS Name, mail AS Mail, employee_id FROM people ORDER BY n"
    assert set(rows_from_sql(hr_url, query)[0]) == set(PIN_COLUMNS)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELECT employee_id, mail FROM people", "lacks the column\\(s\\) name, pin"),
        ("SELECT employee_id, mail, name, pin, salary FROM people", "other column\\(s\\) 'salary'"),
        ("SELECT employee_id, mail, name, pin, pin FROM people", "names a column twice"),
    ],
)
def test_the_wrong_columns_are_named(hr_url: str, query: str, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        rows_from_sql(hr_url, query)


def test_a_row_limit(hr_url: str) -> None:
    with pytest.raises(InputError, match="more than 2 rows"):
        rows_from_sql(hr_url, QUERY, limit=2)
    assert len(rows_from_sql(hr_url, QUERY, limit=3)) == 3


def test_the_checks_run_again_before_the_query(hr_url: str) -> None:
    with pytest.raises(ConfigError, match="without ';'"):
        rows_from_sql(hr_url, f"{QUERY}; DELETE FROM people")
    with pytest.raises(ConfigError, match="must both be set"):
        rows_from_sql(hr_url, "")
    assert len(rows_from_sql(hr_url, QUERY)) == 3


def test_a_failing_query_and_a_missing_database_are_one_line_errors(
    hr_url: str, tmp_path: Path
) -> None:
    with pytest.raises(
        StoreError, match="the HR query failed on sqlite:///.*no such table"
    ) as info:
        rows_from_sql(hr_url, "SELECT employee_id, mail, name, pin FROM nobody")
    assert "\n" not in str(info.value)
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'hr.db'}"
    with pytest.raises(StoreError, match="cannot connect to the HR database"):
        rows_from_sql(missing, QUERY)
    with pytest.raises(ConfigError, match="cannot use the HR database URL"):
        rows_from_sql("nosuchdb://hr@db/hr", QUERY)


# --- import_pin_rows ------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'mailpki.db'}")
    database.migrate()
    yield database
    database.dispose()


def test_rows_are_validated_like_the_csv_with_row_numbers(db: Database) -> None:
    good = {"employee_id": "E1", "mail": "ann@example.com", "name": "Ann", "pin": "Pin-111111"}
    rows: list[dict[str, str]] = [
        good,
        {"employee_id": "E2", "mail": "not-a-mail", "name": "Ben", "pin": "Pin-222222"},
        {"employee_id": "E3", "mail": "cat@example.com", "name": "Cat", "pin": "12"},
        {**good, "mail": "dup@example.com"},
        {"employee_id": "E5", "mail": "dan@example.com"},
        {"employee_id": "E6", "mail": "eve@example.com", "name": "Eve", "pin": 123456},  # type: ignore[dict-item]
        {"EMPLOYEE_ID": "E7", "Mail": "fay@example.com", "name": "Fay", "pin": "Pin-777777"},
    ]
    report = import_pin_rows(db, rows, validity=VALIDITY, hasher=cheap())
    assert (report.added, report.replaced) == (2, 0)
    assert report.errors == [
        "row 2: 'not-a-mail' is not a mail address (local@domain)",
        "row 3: the PIN must be 6 to 64 characters",
        "row 4: employee id 'E1' is already on row 1",
        "row 5: lacks the column(s) name, pin",
        "row 6: a value is not text",
    ]
    with db.session() as session:
        stored = {row.employee_id: row.pin_hash for row in session.scalars(select(HRPin))}
    assert set(stored) == {"E1", "E7"}
    assert all(h.startswith("$argon2id$") and "Pin-" not in h for h in stored.values())


def test_csv_and_rows_give_the_same_result(db: Database) -> None:
    csv = b"employee_id,mail,name,pin\nE1,ann@example.com,Ann,Pin-111111\nE1,b@example.com,B,x\n"
    by_csv = import_pins(db, csv, validity=VALIDITY, hasher=cheap())
    rows = [
        {"employee_id": "E1", "mail": "ann@example.com", "name": "Ann", "pin": "Pin-111111"},
        {"employee_id": "E1", "mail": "b@example.com", "name": "B", "pin": "x"},
    ]
    by_rows = import_pin_rows(db, rows, validity=VALIDITY, hasher=cheap())
    assert (by_csv.added, by_csv.replaced, by_rows.added, by_rows.replaced) == (1, 0, 0, 1)
    # CSV rows count file lines (the header is line 1), SQL rows count from 1.
    assert by_csv.errors == ["line 3: the PIN must be 6 to 64 characters"]
    assert by_rows.errors == ["row 2: the PIN must be 6 to 64 characters"]
    with pytest.raises(InputError, match="validity must be positive"):
        import_pin_rows(db, rows, validity=timedelta(0))
