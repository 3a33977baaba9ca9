"""Person.from_untrusted: normalises good input, refuses bad input with InputError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpki.errors import InputError
from mailpki.policy.person import Person


def _person(**kw: str | None) -> Person:
    fields: dict[str, str | None] = {"name": "Alice Smith", "email": "alice@example.com"}
    fields.update(kw)
    return Person.from_untrusted(**fields)  # type: ignore[arg-type]


def test_normalises() -> None:
    p = Person.from_untrusted(
        name="  Alice Smith ",
        email=" Alice.Smith+mail@Example.COM ",
        organisation=" Example Ltd ",
        site="",
    )
    assert p.name == "Alice Smith"
    assert p.email == "Alice.Smith+mail@example.com"  # local part keeps its case
    assert p.organisation == "Example Ltd"
    assert p.site is None
    assert (p.given_name, p.surname) == ("Alice", "Smith")


def test_splits_only_unambiguous_names() -> None:
    assert _person(name="Mary Ann Smith").given_name is None
    assert _person(name="Mary Ann Smith").surname is None
    assert _person(name="Cher").given_name is None
    explicit = _person(name="Mary Ann Smith", given_name="Mary Ann", surname="Smith")
    assert (explicit.given_name, explicit.surname) == ("Mary Ann", "Smith")
    only_surname = _person(name="Alice Smith", surname="Smith")
    assert (only_surname.given_name, only_surname.surname) == (None, "Smith")


def test_unicode_names_kept_nfc() -> None:
    p = _person(name="Zoe\u0301 Durand")  # decomposed e + combining acute
    assert p.name == "Zoé Durand"
    assert p.given_name == "Zoé"


def test_organisation_identifier() -> None:
    assert _person(organisation_identifier="NTRGB-12345678").organisation_identifier == (
        "NTRGB-12345678"
    )
    assert _person(organisation_identifier="GOVUS").organisation_identifier == "GOVUS"


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"name": ""}, "name: must not be empty"),
        ({"name": "   "}, "name: must not be empty"),
        ({"name": "Alice\x00Smith"}, "name: contains a control"),
        ({"name": "Alice\nSmith"}, "name: contains a control"),
        ({"name": "Alice\u202eSmith"}, "name: contains a control or invisible"),
        ({"name": "A" * 65}, "name: 65 characters is longer than the limit of 64"),
        ({"name": "..."}, "name: must contain at least one letter or digit"),
        ({"name": "Tom &amp; Jerry"}, "name: contains an HTML entity"),
        ({"organisation": "O" * 65}, "organisation: 65 characters"),
        ({"site": "S" * 65}, "site: 65 characters"),
        ({"given_name": "G" * 65}, "given_name: 65 characters"),
        ({"surname": "x\x7f"}, "surname: contains a control"),
        ({"email": ""}, "email: must not be empty"),
        ({"email": "alice"}, "exactly one '@'"),
        ({"email": "a@b@example.com"}, "exactly one '@'"),
        ({"email": "@example.com"}, "before '@' is empty"),
        ({"email": "al ice@example.com"}, "before '@' has a space"),
        ({"email": "alice.@example.com"}, "misplaced dot"),
        ({"email": "al..ice@example.com"}, "misplaced dot"),
        ({"email": "alice@example"}, "not a fully qualified DNS name"),
        ({"email": "alice@-example.com"}, "not a fully qualified DNS name"),
        ({"email": "alice@exa mple.com"}, "not a fully qualified DNS name"),
        ({"email": "alice@example..com"}, "not a fully qualified DNS name"),
        ({"email": "alice@10.0.0.1"}, "numeric top-level label"),
        ({"email": "alicé@example.com"}, "must be ASCII"),
        ({"email": "a" * 65 + "@example.com"}, "longer than 64"),
        ({"email": "a@" + "b" * 250 + ".com"}, "longer than 254"),
        ({"email": "alice@" + "b" * 64 + ".com"}, "not a fully qualified DNS name"),
        ({"organisation_identifier": "12345"}, "not SCHEME+COUNTRY-REFERENCE"),
        ({"organisation_identifier": "NTRGB"}, "needs a registration reference"),
        ({"organisation_identifier": "GOVUS-123"}, "takes no registration reference"),
        ({"organisation_identifier": "ABCGB-123"}, "unknown scheme ABC"),
    ],
)
def test_rejects(fields: dict[str, str], needle: str) -> None:
    with pytest.raises(InputError) as info:
        _person(**fields)
    assert needle in str(info.value)


def test_rejects_non_text() -> None:
    with pytest.raises(InputError, match="name: must be text"):
        Person.from_untrusted(name=42, email="a@example.com")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="email: must be text"):
        Person.from_untrusted(name="A", email=None)  # type: ignore[arg-type]


_text = st.text(max_size=80)
_opt = st.none() | _text


@settings(max_examples=300, deadline=None)
@given(
    name=_text,
    email=_text | st.from_regex(r"[a-z.+]{0,10}@[a-z0-9.-]{0,20}", fullmatch=True),
    organisation=_opt,
    site=_opt,
    given_name=_opt,
    surname=_opt,
    org_id=_opt,
)
def test_arbitrary_text_only_raises_input_error(
    name: str,
    email: str,
    organisation: str | None,
    site: str | None,
    given_name: str | None,
    surname: str | None,
    org_id: str | None,
) -> None:
    try:
        p = Person.from_untrusted(
            name=name,
            email=email,
            organisation=organisation,
            site=site,
            given_name=given_name,
            surname=surname,
            organisation_identifier=org_id,
        )
    except InputError:
        return
    # Whatever got through satisfies the invariants the certificate builder relies on.
    assert p.name and len(p.name) <= 64
    assert p.email.isascii() and len(p.email) <= 254 and p.email.count("@") == 1
    assert " " not in p.email
    for value in (p.organisation, p.site, p.given_name, p.surname):
        assert value is None or (0 < len(value) <= 64 and value == value.strip())
