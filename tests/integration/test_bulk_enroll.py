"""`mailpki bulk-enroll`: a CSV of people in, one escrowed key and PKCS#12 each out."""

from __future__ import annotations

import csv
import io
import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailpki.ca.serials import show_serial
from mailpki.instance import enrollments
from mailpki.instance.enrollments import p12_name
from mailpki.instance.instance import Instance
from mailpki.keymanager.pkcs12 import READABLE_ALPHABET, LoadedPKCS12, load_pkcs12
from tests.integration.cli_helpers import Result, mailpki, mailpki_process

pytestmark = pytest.mark.integration

HEADER = "email,serial,file,password"
GENERATED = re.compile(rf"[{READABLE_ALPHABET}]{{5}}(-[{READABLE_ALPHABET}]{{5}}){{3}}")

# Six P-256 people (fast) and two RSA-2048: one named, one from the default key type.
PEOPLE = [
    ("ann@example.com", "Ann Archer", "p256"),
    ("ben@example.com", "Ben Baker", "p256"),
    ("cat@example.com", "Cat Cole", "p256"),
    ("dan@example.com", "Dan Dyer", "p256"),
    ("eve@example.com", "Eve Ellis", "p256"),
    ("fay@example.com", "Fay Ford", "p256"),
    ("gus@example.com", "Gus Grant", "rsa2048"),
    ("hal@example.com", "Hal Hill", ""),  # keymanager.key_type: rsa2048
]


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    lines = ["email,name,key_type"] + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def bulk(home: Path, csv_file: Path, out: Path, *extra: str | Path) -> Result:
    return mailpki(
        "bulk-enroll", "--home", home, "--input", csv_file, "--out", out, "--workers", "2", *extra
    )


def output_rows(out: str) -> list[dict[str, str]]:
    assert out.splitlines()[0] == HEADER
    return list(csv.DictReader(io.StringIO(out)))


def escrowed(home: Path) -> list[dict[str, str]]:
    result = mailpki("keys", "list", "--home", home, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def subscriber_certificates(home: Path) -> int:
    instance = Instance.open(home)
    try:
        return instance.ca.list_certificates()[1]
    finally:
        instance.close()


def open_p12(path: Path, password: str | bytes) -> LoadedPKCS12:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return load_pkcs12(
        path.read_bytes(), password if isinstance(password, bytes) else password.encode()
    )


def email_of(loaded: LoadedPKCS12) -> str:
    san = loaded.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    [email] = san.value.get_values_for_type(x509.RFC822Name)
    return email


# -- a whole CSV -------------------------------------------------------------------------


def test_bulk_enroll_everyone(home: Path, tmp_path: Path) -> None:
    people = write_csv(tmp_path / "people.csv", PEOPLE)
    out = tmp_path / "p12"
    # A real process, as a person runs it: the worker pool, stdout and stderr apart.
    result = mailpki_process(
        "bulk-enroll", "--home", home, "--input", people, "--out", out, "--workers", "2"
    )
    assert result.code == 0, result.err

    rows = output_rows(result.out)
    assert len(rows) == len(PEOPLE) == len(result.out.splitlines()) - 1
    assert {r["email"] for r in rows} == {email for email, _, _ in PEOPLE}
    assert len({r["serial"] for r in rows}) == len(rows)
    assert len({r["password"] for r in rows}) == len(rows)
    key_types = {email: key_type or "rsa2048" for email, _, key_type in PEOPLE}
    for row in rows:
        assert GENERATED.fullmatch(row["password"]), row
        assert Path(row["file"]) == out / p12_name(row["email"])
        loaded = open_p12(Path(row["file"]), row["password"])
        assert show_serial(loaded.certificate.serial_number) == row["serial"]
        assert email_of(loaded) == row["email"]
        if key_types[row["email"]] == "p256":
            assert isinstance(loaded.key, ec.EllipticCurvePrivateKey)
            assert loaded.key.curve.name == "secp256r1"
        else:
            assert isinstance(loaded.key, rsa.RSAPrivateKey) and loaded.key.key_size == 2048
    assert sorted(p.name for p in out.iterdir()) == sorted(p12_name(e) for e, _, _ in PEOPLE)

    records = escrowed(home)
    assert {r["serial"] for r in records} == {r["serial"] for r in rows}
    assert {r["state"] for r in records} == {"delivered"}
    assert {r["email"]: r["key_type"] for r in records} == key_types

    # The progress bar and the summary go to stderr, never into the CSV.
    assert "enrolling" in result.err and f"{len(PEOPLE)}/{len(PEOPLE)}" in result.err
    assert f"{len(PEOPLE)} enrolled, 0 failed" in result.err
    assert "enrolling" not in result.out and "━" not in result.out
    assert mailpki("audit", "verify", "--home", home).code == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_bad_row_is_reported_and_the_others_enrolled(
    sqlite_home: Path, tmp_path: Path, workers: str
) -> None:
    rows = [
        ("ann@example.com", "Ann Archer", "p256"),
        ("not-an-email", "Nobody", "p256"),
        ("ben@example.com", "Ben Baker", "p256"),
        ("cat@localhost", "Cat Cole", "p256"),
    ]
    people = write_csv(tmp_path / "people.csv", rows)
    out = tmp_path / "p12"
    result = mailpki(
        "bulk-enroll", "--home", sqlite_home, "--input", people, "--out", out,
        "--workers", workers,
    )  # fmt: skip
    assert result.code == 1, result.out + result.err
    assert {r["email"] for r in output_rows(result.out)} == {"ann@example.com", "ben@example.com"}
    assert re.search(r"line 3 \(not-an-email\): .*@", result.err)
    assert re.search(r"line 5 \(cat@localhost\): .*localhost", result.err)
    assert "2 enrolled, 2 failed" in result.err
    assert sorted(p.name for p in out.iterdir()) == ["ann@example.com.p12", "ben@example.com.p12"]
    records = escrowed(sqlite_home)
    assert sorted(r["email"] for r in records) == ["ann@example.com", "ben@example.com"]
    assert {r["state"] for r in records} == {"delivered"}


def test_password_file_is_used_for_every_file_and_never_printed(
    sqlite_home: Path, tmp_path: Path
) -> None:
    people = write_csv(tmp_path / "people.csv", PEOPLE[:3])
    password_file = tmp_path / "password"
    password_file.write_text("Correct-Horse-Battery-7\n")
    out = tmp_path / "p12"
    result = bulk(sqlite_home, people, out, "--password-file", password_file)
    assert result.code == 0, result.err
    rows = output_rows(result.out)
    assert len(rows) == 3
    assert {r["password"] for r in rows} == {""}
    assert "Correct-Horse" not in result.out + result.err
    for row in rows:
        loaded = open_p12(Path(row["file"]), b"Correct-Horse-Battery-7")
        assert show_serial(loaded.certificate.serial_number) == row["serial"]
    assert {r["state"] for r in escrowed(sqlite_home)} == {"delivered"}


def test_an_out_dir_holding_one_of_the_files_is_refused_before_any_work(
    sqlite_home: Path, tmp_path: Path
) -> None:
    people = write_csv(tmp_path / "people.csv", PEOPLE[:3])
    out = tmp_path / "p12"
    out.mkdir()
    existing = out / p12_name("ben@example.com")
    existing.write_bytes(b"somebody's earlier file")
    result = bulk(sqlite_home, people, out)
    assert result.code == 2, result.out + result.err
    assert "already holds 1" in result.err and "ben@example.com.p12" in result.err
    assert result.out.strip() in ("", HEADER)  # no person's line
    assert existing.read_bytes() == b"somebody's earlier file"
    assert [p.name for p in out.iterdir()] == [existing.name]
    assert escrowed(sqlite_home) == []
    assert subscriber_certificates(sqlite_home) == 0


# -- malformed CSVs: refused whole, before anything is enrolled ---------------------------


@pytest.fixture(scope="module")
def untouched_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One instance for every malformed CSV: none of them may enroll anybody."""
    target = tmp_path_factory.mktemp("malformed") / "corp"
    result = mailpki(
        "init", "--home", target, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    )  # fmt: skip
    assert result.code == 0, result.err
    yield target
    # Checked once more at the end: the whole series left no trace.
    assert escrowed(target) == []
    assert subscriber_certificates(target) == 0


MALFORMED: dict[str, tuple[bytes, str]] = {
    "no-header": (b"ann@example.com,Ann Archer\nben@example.com,Ben Baker\n", "header"),
    "unknown-column": (
        b"email,name,department\nann@example.com,Ann Archer,Sales\n",
        "unknown CSV column(s): department",
    ),
    "duplicate-email": (
        b"email,name\nann@example.com,Ann Archer\nANN@example.com,Ann Again\n",
        "line 3: ann@example.com appears twice",
    ),
    "not-utf8": ("email,name\nann@example.com,Änne Archer\n".encode("latin-1"), "not UTF-8"),
    "empty": (b"", "header"),
    "header-only": (b"email,name\n", "no people"),
    "extra-field": (b"email,name\nann@example.com,Ann Archer,surplus\n", "more fields"),
    "bad-key-type": (b"email,name,key_type\nann@example.com,Ann Archer,dsa1024\n", "dsa1024"),
    # Without csv's strict mode the quote swallowed every later row into one name.
    "unclosed-quote": (
        b'email,name\nann@example.com,"Ann Archer\nben@example.com,Ben Baker\n',
        "the CSV is malformed",
    ),
    "unclosed-quote-in-header": (b'"email,name\nann@example.com,Ann Archer\n', "header line"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_csv_is_refused_whole(untouched_home: Path, tmp_path: Path, case: str) -> None:
    data, message = MALFORMED[case]
    people = tmp_path / "people.csv"
    people.write_bytes(data)
    out = tmp_path / "p12"
    result = bulk(untouched_home, people, out)
    assert result.code == 2, result.out + result.err
    assert message in result.err
    assert result.out == ""
    assert not out.exists()
    assert escrowed(untouched_home) == []
    assert subscriber_certificates(untouched_home) == 0


def test_a_csv_over_the_size_limit_is_refused_unread(untouched_home: Path, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    with people.open("wb") as handle:  # sparse: the size is checked before reading
        handle.truncate(enrollments.MAX_CSV_BYTES + 1)
    out = tmp_path / "p12"
    result = bulk(untouched_home, people, out)
    assert result.code == 2, result.out + result.err
    assert "the limit is" in result.err
    assert result.out == "" and not out.exists()


def test_a_csv_over_the_row_limit_is_refused(
    untouched_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(enrollments, "MAX_CSV_ROWS", 3)
    rows = [(f"user{n}@example.com", f"User{n} Smith", "p256") for n in range(4)]
    people = write_csv(tmp_path / "people.csv", rows)
    out = tmp_path / "p12"
    result = bulk(untouched_home, people, out)
    assert result.code == 2, result.out + result.err
    assert "more than 3 rows" in result.err
    assert result.out == "" and not out.exists()
    # Exactly at the limit is fine for the parser (not enrolled here: the CSV is read only).
    assert len(enrollments.read_people(people.read_bytes().rsplit(b"\n", 2)[0])) == 3
