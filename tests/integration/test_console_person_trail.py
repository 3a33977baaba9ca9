"""A person's console page searches the newest records of the audit log for their trail
(the search reads the records' text, which no index serves) and says so, with a link
that searches the whole log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mailpki.instance import console_people
from mailpki.instance.console_access import ConsoleUser
from mailpki.instance.console_people import person_page
from mailpki.instance.instance import Instance
from mailpki.policy.person import Person
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

OPERATOR = ConsoleUser("olga", "Olga Operator", "olga@example.com", frozenset({"operator"}))


@pytest.fixture
def instance(sqlite_home: Path, tmp_path: Path) -> Iterator[Instance]:
    people = tmp_path / "people.csv"
    people.write_text(
        "login,mail,name,given_name,surname,site,enabled\n"
        "pat,pat@example.com,Pat Example,Pat,Example,HQ,true\n"
    )
    done = mailpki("directory", "import", people, "--home", sqlite_home)
    assert done.code == 0, done.err
    opened = Instance.open(sqlite_home)
    try:
        yield opened
    finally:
        opened.close()


def issue(instance: Instance, mail: str) -> None:
    person = Person.from_untrusted(email=mail, name="Someone", given_name="Some", surname="One")
    instance.ca.issue_for_key(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        person,
        profile="mailbox-strict",
        actor="test",
    )


def test_the_trail_searches_the_newest_records_and_the_whole_log_on_request(
    instance: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    issue(instance, "pat@example.com")  # cert.issued names pat's mail
    page = person_page(instance, OPERATOR, "pat")
    assert page.trail_from == 1  # a short log is searched whole
    assert any(line.event == "cert.issued" for line in page.trail)

    monkeypatch.setattr(console_people, "TRAIL_WINDOW", 5)
    for n in range(6):  # other people's records push pat's out of the window
        issue(instance, f"other{n}@example.com")
    recent = person_page(instance, OPERATOR, "pat")
    assert recent.trail_from > 1
    assert not any(line.event == "cert.issued" for line in recent.trail)
    whole = person_page(instance, OPERATOR, "pat", whole_log=True)
    assert whole.trail_from == 1
    assert [line.event for line in whole.trail if line.event == "cert.issued"] == ["cert.issued"]
