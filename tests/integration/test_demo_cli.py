"""`mailpki demo`: a ready instance with sample people and PINs, reused on later runs."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mailpki.errors import AuthenticationError
from mailpki.instance import directory_ops
from mailpki.instance.demo import CREDENTIALS_FILE, SAMPLE_PEOPLE
from mailpki.instance.instance import Instance
from tests.integration.cli_helpers import mailpki
from tests.integration.conftest import SRC, _free_port

# "1003  12345678  zoe.dupre@example.com  Zoë Dupré  Engineering" in the printed table.
ROW = re.compile(r"^(\d{4})\s+(\d{8})\s+(\S+@example\.com)\s+(.+?)\s{2,}(\S.*?)\s*$", re.M)


def printed_pins(out: str) -> dict[str, tuple[str, str]]:
    """employee id -> (PIN, mail), as the command printed them."""
    return {m[1]: (m[2], m[3]) for m in ROW.finditer(out)}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One demo made by the real CLI (it creates a CA: shared by the tests here)."""
    home = tmp_path_factory.mktemp("demo") / "demo"
    result = mailpki("demo", "--home", home, "--no-serve", "--port", "8765")
    assert result.code == 0, result.err
    return home, result.out


def test_demo_creates_instance_people_and_pins(demo: tuple[Path, str]) -> None:
    home, out = demo
    assert "(created)" in out
    assert "Open http://127.0.0.1:8765/" in out
    assert f"{home / 'outbox'}/" in out and "no SMTP host set" in out
    assert "Not serving" in out
    pins = printed_pins(out)
    assert len(pins) == len(SAMPLE_PEOPLE) >= 8
    assert "Zoë Dupré" in out

    instance = Instance.open(home)
    try:
        assert instance.config.get("web.base_url") == "http://127.0.0.1:8765"
        # CDP and AIA keep a name pkilint accepts in certificates.
        assert instance.config.get("web.pki_base_url") == "http://pki.example.com"
        for person in SAMPLE_PEOPLE:
            entry = directory_ops.show(instance, person.login)
            assert entry.mail == person.mail and entry.employee_id == person.employee_id
            assert entry.site == person.department
        zoe = directory_ops.show(instance, "zoe.dupre")
        assert (zoe.given_name, zoe.surname, zoe.organisation) == ("Zoë", "Dupré", "Example Corp")

        employee_id, (pin, mail) = next(iter(pins.items()))
        identity = instance.pin_logon.authenticate(employee_id, pin)
        assert identity.entry.directory == "embedded" and identity.entry.mail == mail
        with pytest.raises(AuthenticationError):  # one logon per PIN
            instance.pin_logon.authenticate(employee_id, pin)
        # By mail, as the portal also accepts.
        other_id, (other_pin, other_mail) = list(pins.items())[1]
        assert instance.pin_logon.authenticate(other_mail, other_pin).entry.employee_id == other_id
        # The embedded directory holds no passwords: a PIN is the only logon it offers.
        with pytest.raises(AuthenticationError):
            directory_ops.authenticate(instance, "zoe.dupre", pins["1003"][0], actor="test")
    finally:
        instance.close()

    credentials = home / CREDENTIALS_FILE
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    text = credentials.read_text(encoding="utf-8")
    for employee_id, (pin, _) in pins.items():
        assert f"{employee_id}\t" in text and f"\t{pin}\t" in text


def run_demo(home: Path, port: str = "8765") -> str:
    result = mailpki("demo", "--home", home, "--no-serve", "--port", port)
    assert result.code == 0, result.err
    return result.out


def test_second_run_reuses_and_prints_the_same_logons(demo: tuple[Path, str]) -> None:
    home, _ = demo
    settled = printed_pins(run_demo(home))  # PINs spent by other tests are renewed here
    before = snapshot(home)
    again = run_demo(home)
    assert "already there, reused" in again
    assert printed_pins(again) == settled
    assert snapshot(home) == before  # nothing created, nothing changed


def test_a_spent_pin_is_renewed_by_the_next_run(demo: tuple[Path, str]) -> None:
    home, _ = demo
    pins = printed_pins(run_demo(home))
    spent_id, (spent_pin, mail) = sorted(pins.items())[-1]
    instance = Instance.open(home)
    try:
        instance.pin_logon.authenticate(spent_id, spent_pin)
    finally:
        instance.close()
    renewed = printed_pins(run_demo(home))
    assert renewed[spent_id][0] != spent_pin
    assert {k: v for k, v in renewed.items() if k != spent_id} == {
        k: v for k, v in pins.items() if k != spent_id
    }
    assert (home / CREDENTIALS_FILE).read_text().count(renewed[spent_id][0]) == 1
    instance = Instance.open(home)
    try:
        assert instance.pin_logon.authenticate(spent_id, renewed[spent_id][0]).entry.mail == mail
    finally:
        instance.close()


def test_another_port_never_changes_the_settings(demo: tuple[Path, str]) -> None:
    """Printing the logons again must not move the links already mailed (web.base_url)."""
    home, _ = demo
    pins = printed_pins(run_demo(home))
    config_before = (home / "config.toml").read_bytes()
    result = mailpki("demo", "--home", home, "--no-serve", "--port", "8766")
    assert result.code == 0, result.err
    assert "Open http://127.0.0.1:8765/" in result.out
    assert printed_pins(result.out) == pins
    assert "point at http://127.0.0.1:8765" in result.err
    assert "config set --home" in result.err and "web.base_url http://127.0.0.1:8766" in result.err
    assert (home / "config.toml").read_bytes() == config_before
    instance = Instance.open(home)
    try:
        assert instance.config.get("web.base_url") == "http://127.0.0.1:8765"
    finally:
        instance.close()
    # Without --port the demo keeps to its own links: nothing to warn about.
    again = mailpki("demo", "--home", home, "--no-serve")
    assert again.code == 0 and "warning" not in again.err
    assert "Open http://127.0.0.1:8765/" in again.out


def test_a_void_pin_is_renewed_by_the_next_run(demo: tuple[Path, str]) -> None:
    home, _ = demo
    pins = printed_pins(run_demo(home))
    pin, _mail = pins["1007"]
    instance = Instance.open(home)
    try:
        for n in range(5):  # pins.max_attempts wrong tries void the PIN
            with pytest.raises(AuthenticationError):
                instance.pin_logon.authenticate("1007", "00000000", source=f"192.0.2.{n}")
    finally:
        instance.close()
    renewed = printed_pins(run_demo(home))
    assert renewed["1007"][0] != pin
    assert {k: v for k, v in renewed.items() if k != "1007"} == {
        k: v for k, v in pins.items() if k != "1007"
    }


def test_the_demo_says_its_revocation_urls_do_not_resolve(demo: tuple[Path, str]) -> None:
    _home, out = demo
    assert "http://pki.example.com" in out and "does not resolve" in out
    assert "web.base_url https://pki.yourcompany.com" in out


def test_home_from_environment(demo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    home, _ = demo
    pins = printed_pins(run_demo(home))
    monkeypatch.setenv("MAILPKI_HOME", str(home))
    result = mailpki("demo", "--no-serve", "--port", "8765")
    assert result.code == 0, result.err
    assert printed_pins(result.out) == pins


def test_non_demo_home_is_left_untouched(sqlite_home: Path) -> None:
    before = snapshot(sqlite_home)
    result = mailpki("demo", "--home", sqlite_home, "--no-serve")
    assert result.code == 0, result.err
    assert "did not create" in result.out and "no demo logons" in result.out
    assert printed_pins(result.out) == {}
    assert not (sqlite_home / CREDENTIALS_FILE).exists()
    assert snapshot(sqlite_home) == before


def test_bad_port_is_refused(tmp_path: Path) -> None:
    result = mailpki("demo", "--home", tmp_path / "d", "--no-serve", "--port", "70000")
    assert result.code == 2 and "--port" in result.err
    assert not (tmp_path / "d").exists()


def test_damaged_credentials_file_is_an_error(tmp_path: Path, demo: tuple[Path, str]) -> None:
    home, _ = demo
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.toml").write_bytes((home / "config.toml").read_bytes())
    (copy / CREDENTIALS_FILE).write_text("nonsense\n")
    result = mailpki("demo", "--home", copy, "--no-serve")
    assert result.code != 0 and "damaged" in result.err


def test_demo_serves(tmp_path: Path) -> None:
    home = tmp_path / "served"
    port = _free_port()
    log = tmp_path / "demo.log"
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailpki", "demo", "--home", str(home), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # creating the CA comes first
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mailpki demo exited {proc.returncode}:\n{log.read_text()}")
            try:
                url = f"http://127.0.0.1:{port}/ca/root.crt"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        assert response.read()
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mailpki demo did not start serving:\n{log.read_text()}")
            time.sleep(0.2)
        printed = log.read_text(encoding="utf-8")
        assert f"Open http://127.0.0.1:{port}/" in printed
        assert len(printed_pins(printed)) == len(SAMPLE_PEOPLE)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


@pytest.mark.parametrize("folder_existed", [False, True])
def test_failed_creation_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder_existed: bool
) -> None:
    from mailpki.errors import StoreError

    def broken(*args: object, **kwargs: object) -> None:
        raise StoreError("disk full (simulated)")

    monkeypatch.setattr(directory_ops, "import_hr_pins", broken)
    home = tmp_path / "demo"
    if folder_existed:
        home.mkdir()
        (home / "notes.txt").write_text("mine\n")
    result = mailpki("demo", "--home", home, "--no-serve")
    assert result.code != 0 and "disk full (simulated)" in result.err
    if folder_existed:
        assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]
    else:
        assert not home.exists()
