"""The demo's sample data, credentials file and URLs (no instance needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailpki.cli.demo import demo_home, local_url
from mailpki.errors import InputError, InstanceError
from mailpki.instance.demo import (
    PIN_DIGITS,
    SAMPLE_PEOPLE,
    DemoPerson,
    DemoPin,
    format_credentials,
    new_pin,
    parse_credentials,
    people_csv,
    pins_csv,
)

WHERE = Path("demo/demo-credentials.txt")


def sample() -> tuple[tuple[DemoPerson, ...], tuple[DemoPin, ...]]:
    people = tuple(
        DemoPerson(p.login, p.name, p.mail, p.department, p.employee_id) for p in SAMPLE_PEOPLE
    )
    return people, tuple(DemoPin(p.employee_id, p.name, p.mail, new_pin()) for p in people)


def test_sample_people_are_varied_and_unique() -> None:
    assert len(SAMPLE_PEOPLE) >= 8
    assert len({p.login for p in SAMPLE_PEOPLE}) == len(SAMPLE_PEOPLE)
    assert len({p.employee_id for p in SAMPLE_PEOPLE}) == len(SAMPLE_PEOPLE)
    assert any(not p.name.isascii() for p in SAMPLE_PEOPLE)
    assert {"Sales", "Engineering"} <= {p.department for p in SAMPLE_PEOPLE}
    assert all(p.mail.endswith("@example.com") for p in SAMPLE_PEOPLE)


def test_pins_are_random_digits() -> None:
    pins = {new_pin() for _ in range(50)}
    assert all(len(pin) == PIN_DIGITS and pin.isdigit() for pin in pins)
    assert len(pins) > 45


def test_import_files_use_the_importers_columns() -> None:
    people = people_csv(SAMPLE_PEOPLE).decode("utf-8").splitlines()
    assert people[0] == ("login,mail,name,given_name,surname,organisation,site,groups,employee_id")
    assert "zoe.dupre,zoe.dupre@example.com,Zoë Dupré,Zoë,Dupré" in people[3]
    _, pins = sample()
    rows = pins_csv(pins).decode("utf-8").splitlines()
    assert rows[0] == "employee_id,mail,name,pin" and len(rows) == len(pins) + 1


def test_credentials_round_trip() -> None:
    people, pins = sample()
    data = format_credentials(people, pins)
    assert data.startswith(b"# mailpki demo")
    assert parse_credentials(data.decode("utf-8"), where=WHERE) == (people, pins)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only comments\n",
        "employee_id\tlogin\tpin\tname\tmail\tdepartment\n",  # nobody listed
        "1001\talice\t12345678\tAlice\talice@example.com\tSales\n",  # no header
        "employee_id\tlogin\tpin\tname\tmail\tdepartment\n1001\talice\n",  # short line
        "employee_id\tlogin\tpin\tname\tmail\tdepartment\n\talice\t1\tA\ta@example.com\tS\n",
    ],
)
def test_damaged_credentials_are_refused(text: str) -> None:
    with pytest.raises(InstanceError, match="demo"):
        parse_credentials(text, where=WHERE)


def test_tabs_in_details_are_refused() -> None:
    person = DemoPerson("x", "Tab\tName", "x@example.com", "Sales", "1")
    with pytest.raises(InstanceError):
        format_credentials([person], [])


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8080, "http://127.0.0.1:8080"),
        ("0.0.0.0", 9000, "http://127.0.0.1:9000"),
        ("::", 80, "http://127.0.0.1:80"),
        ("::1", 8080, "http://[::1]:8080"),
        ("pki.local", 8443, "http://pki.local:8443"),
    ],
)
def test_local_url(host: str, port: int, url: str) -> None:
    assert local_url(host, port) == url


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_local_url_refuses_bad_ports(port: int) -> None:
    with pytest.raises(InputError, match="--port"):
        local_url("127.0.0.1", port)


def test_demo_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILPKI_HOME", raising=False)
    assert demo_home(None) == Path("demo")
    assert demo_home(Path("x")) == Path("x")
    monkeypatch.setenv("MAILPKI_HOME", "/srv/pki")
    assert demo_home(None) == Path("/srv/pki")
