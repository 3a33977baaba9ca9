"""Bad input: a clear one-line error, a non-zero exit, and nothing else changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cli_helpers import mailpki, make_csr, openssl


def snapshot(home: Path) -> tuple[list[dict[str, str]], int]:
    listed = json.loads(mailpki("certs", "list", "--home", home, "--json", "--include-ca").out)
    verify = json.loads(mailpki("audit", "verify", "--home", home, "--json").out)
    return listed, verify["ok"]


def refused_events(home: Path) -> int:
    import sqlite3

    db = sqlite3.connect(home / "mailpki.db")
    try:
        return db.execute(
            "SELECT count(*) FROM audit_records WHERE event='cert.refused'"
        ).fetchone()[0]
    finally:
        db.close()


def try_issue(home: Path, csr: Path, tmp_path: Path, *extra: str) -> tuple[int, str]:
    result = mailpki(
        "ca",
        "issue",
        "--home",
        home,
        "--csr",
        csr,
        "--email",
        "alice@example.com",
        "--name",
        "Alice Smith",
        "--out",
        tmp_path / "out.pem",
        *extra,
    )
    return result.code, result.err


def bad_csrs(tmp_path: Path) -> dict[str, Path]:
    good = make_csr(tmp_path, "good").read_bytes()
    files = {
        "garbage": b"\x00\x01this is not a CSR\xff" * 10,
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "pem-with-junk": b"hello\n" + good + b"\ntrailing junk\n",
        "two-blocks": good + good,
        "huge": b"A" * (1024 * 1024 + 10),
    }
    key = tmp_path / "k.pem"
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=x",
        "-keyout",
        key,
        "-out",
        tmp_path / "cert.pem",
    )
    files["certificate"] = (tmp_path / "cert.pem").read_bytes()
    # A CSR whose self-signature is broken: flip a byte in the signature.
    der_path = tmp_path / "good.der"
    openssl("req", "-in", tmp_path / "good.csr", "-outform", "DER", "-out", der_path)
    der = bytearray(der_path.read_bytes())
    der[-5] ^= 0x01
    files["bad-signature"] = bytes(der)
    paths = {}
    for name, data in files.items():
        path = tmp_path / f"{name}.csr"
        path.write_bytes(data)
        paths[name] = path
    return paths


def test_bad_csrs_are_refused_and_change_nothing(sqlite_home: Path, tmp_path: Path) -> None:
    before = snapshot(sqlite_home)
    for name, path in bad_csrs(tmp_path).items():
        code, err = try_issue(sqlite_home, path, tmp_path)
        assert code != 0, name
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert "error:" in err, name
        assert not (tmp_path / "out.pem").exists(), name
    assert snapshot(sqlite_home) == before


def test_missing_and_directory_inputs(sqlite_home: Path, tmp_path: Path) -> None:
    code, err = try_issue(sqlite_home, tmp_path / "nope.csr", tmp_path)
    assert code != 0 and "does not exist" in err
    code, err = try_issue(sqlite_home, tmp_path, tmp_path)
    assert code != 0 and "not a regular file" in err


@pytest.mark.parametrize(
    "keyspec",
    [
        ["rsa:1024"],
        ["rsa:2048", "-pkeyopt", "rsa_keygen_pubexp:3"],
        ["ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
        ["ed25519"],
    ],
)
def test_weak_keys_refused_with_only_an_audit_entry(
    sqlite_home: Path, tmp_path: Path, keyspec: list[str]
) -> None:
    csr = tmp_path / "weak.csr"
    newkey = ["-newkey", keyspec[0], *keyspec[1:]]
    if keyspec[0] == "ed25519":
        newkey = ["-newkey", "ed25519"]
    openssl(
        "req",
        "-new",
        *newkey,
        "-nodes",
        "-subj",
        "/CN=weak",
        "-keyout",
        tmp_path / "weak.key",
        "-out",
        csr,
    )
    before_certs, _ = snapshot(sqlite_home)
    before_refusals = refused_events(sqlite_home)
    code, err = try_issue(sqlite_home, csr, tmp_path)
    assert code != 0
    assert len(err.strip().splitlines()) == 1
    assert snapshot(sqlite_home)[0] == before_certs
    assert refused_events(sqlite_home) == before_refusals + 1
    assert mailpki("audit", "verify", "--home", sqlite_home).code == 0


def test_unknown_profile_and_bad_person(sqlite_home: Path, tmp_path: Path) -> None:
    csr = make_csr(tmp_path, "p")
    before = snapshot(sqlite_home)
    code, err = try_issue(sqlite_home, csr, tmp_path, "--profile", "no-such-profile")
    assert code != 0 and "no-such-profile" in err and "sponsored-multipurpose" in err
    result = mailpki(
        "ca",
        "issue",
        "--home",
        sqlite_home,
        "--csr",
        csr,
        "--email",
        "not an address",
        "--name",
        "X",
        "--out",
        tmp_path / "o.pem",
    )
    assert result.code != 0 and "email" in result.err.lower()
    result = mailpki(
        "ca",
        "issue",
        "--home",
        sqlite_home,
        "--csr",
        csr,
        "--email",
        "a@example.com",
        "--name",
        "<script>\x07",
        "--out",
        tmp_path / "o.pem",
    )
    assert result.code != 0
    assert snapshot(sqlite_home)[0] == before[0]


def test_revoke_unknown_twice_and_bad_reason(sqlite_home: Path, tmp_path: Path) -> None:
    result = mailpki("ca", "revoke", "--home", sqlite_home, "DEADBEEF", "--reason", "keyCompromise")
    assert result.code != 0 and "no certificate with serial DEADBEEF" in result.err
    result = mailpki("ca", "revoke", "--home", sqlite_home, "xyz")
    assert result.code != 0 and "not a serial number" in result.err
    csr = make_csr(tmp_path, "r")
    out = tmp_path / "r.pem"
    assert (
        mailpki(
            "ca",
            "issue",
            "--home",
            sqlite_home,
            "--csr",
            csr,
            "--email",
            "r@example.com",
            "--name",
            "R Person",
            "--out",
            out,
        ).code
        == 0
    )
    serial = json.loads(mailpki("certs", "list", "--home", sqlite_home, "--json").out)[0]["serial"]
    result = mailpki("ca", "revoke", "--home", sqlite_home, serial, "--reason", "because")
    assert result.code != 0 and "keyCompromise" in result.err
    assert (
        mailpki("ca", "revoke", "--home", sqlite_home, serial, "--reason", "superseded").code == 0
    )
    before = snapshot(sqlite_home)
    again = mailpki("ca", "revoke", "--home", sqlite_home, serial, "--reason", "keyCompromise")
    assert again.code != 0 and "already revoked" in again.err
    assert snapshot(sqlite_home) == before


def test_output_exists_refused_before_issuing(sqlite_home: Path, tmp_path: Path) -> None:
    csr = make_csr(tmp_path, "o")
    out = tmp_path / "exists.pem"
    out.write_text("keep me")
    before = snapshot(sqlite_home)
    result = mailpki(
        "ca",
        "issue",
        "--home",
        sqlite_home,
        "--csr",
        csr,
        "--email",
        "o@example.com",
        "--name",
        "O Person",
        "--out",
        out,
    )
    assert result.code != 0 and "--force" in result.err
    assert out.read_text() == "keep me"
    assert snapshot(sqlite_home) == before


def test_corrupt_config_gives_clear_error(sqlite_home: Path) -> None:
    (sqlite_home / "config.toml").write_text("[instance\norg = ")
    result = mailpki("certs", "list", "--home", sqlite_home)
    assert result.code != 0 and "not valid TOML" in result.err


def test_bad_key_and_passphrase_files_for_root_import(sqlite_home: Path, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("export passphrase")
    exported = tmp_path / "root.pem"
    assert (
        mailpki(
            "ca",
            "root",
            "export",
            "--home",
            sqlite_home,
            "--out",
            exported,
            "--passphrase-file",
            pw,
        ).code
        == 0
    )
    assert mailpki("ca", "root", "remove", "--home", sqlite_home, "--yes").code == 0
    good = exported.read_bytes()
    cases = {
        "garbage": b"\x00garbage\xff" * 20,
        "truncated": good[: len(good) // 2],
        "pem-with-junk": b"junk\n" + good + b"junk",
        "huge": b"A" * (1024 * 1024 + 1),
        "certificate": (sqlite_home / "ca" / "root.pem").read_bytes(),
        "empty": b"",
    }
    before = snapshot(sqlite_home)
    for name, data in cases.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(data)
        result = mailpki(
            "ca", "root", "import", "--home", sqlite_home, "--key", path, "--passphrase-file", pw
        )
        assert result.code != 0, name
        assert len(result.err.strip().splitlines()) == 1, (name, result.err)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase")
    result = mailpki(
        "ca", "root", "import", "--home", sqlite_home, "--key", exported, "--passphrase-file", wrong
    )
    assert result.code != 0 and len(result.err.strip().splitlines()) == 1
    result = mailpki(
        "ca",
        "root",
        "import",
        "--home",
        sqlite_home,
        "--key",
        exported,
        "--passphrase-file",
        tmp_path / "missing",
    )
    assert result.code != 0 and "does not exist" in result.err
    assert not (sqlite_home / "keys" / "root.pem").exists()
    assert snapshot(sqlite_home) == before


def test_missing_passphrase_is_a_clear_error(sqlite_home: Path) -> None:
    (sqlite_home / "secrets" / "ca-passphrase").rename(sqlite_home / "secrets" / "moved")
    result = mailpki("ca", "crl", "--home", sqlite_home, "--out", sqlite_home / "cdp")
    assert result.code != 0
    assert "passphrase" in result.err and len(result.err.strip().splitlines()) == 1


def test_directory_add_refuses_bad_settings_before_connecting(
    sqlite_home: Path, tmp_path: Path
) -> None:
    password = tmp_path / "bind.pw"
    password.write_text("secret\n")
    base = [
        "directory", "add", "--home", sqlite_home, "corp", "--flavour", "openldap",
        "--base-dn", "dc=example,dc=com", "--bind-dn", "cn=mailpki,dc=example,dc=com",
        "--bind-password-file", password, "--domain", "example.com",
    ]  # fmt: skip
    cases = {
        "--map takes KEY=ATTRIBUTE": ["--url", "ldaps://127.0.0.1:1", "--map", "site"],
        "unknown attribute mapping key": ["--url", "ldaps://127.0.0.1:1", "--map", "colour=c"],
        "refusing to send passwords over plain ldap://": ["--url", "ldap://127.0.0.1:1"],
        "--timeout must be between": ["--url", "ldaps://127.0.0.1:1", "--timeout", "0"],
    }
    for message, extra in cases.items():
        result = mailpki(*base, *extra)
        assert result.code != 0 and message in result.err, (extra, result.err)
    listed = mailpki("directory", "list", "--home", sqlite_home, "--json")
    assert json.loads(listed.out) == []
