"""console_roles: roles given by the logon, or by directory groups; nobody else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailpki.errors import AuthenticationError
from mailpki.instance.config import Config
from mailpki.instance.console_access import console_roles, console_user, require
from mailpki.policy.operator_roles import Permission


@pytest.fixture
def config(tmp_path: Path) -> Config:
    made = Config.create(
        tmp_path, {"instance.org": "Example Corp", "instance.domain": "example.com"}
    )
    made.set("portal.officer_groups", "pki-officers")
    made.set("portal.operator_groups", "pki-operators, Helpdesk")
    made.set("portal.auditor_groups", "pki-auditors")
    return made


def person(method: str = "directory", *groups: str, login: str = "bob") -> dict[str, Any]:
    return {"method": method, "entry": {"login": login, "mail": f"{login}@example.com",
                                        "groups": list(groups)}}  # fmt: skip


def test_directory_groups_give_roles(config: Config) -> None:
    assert console_roles(person("directory", "cn=pki-officers,ou=g"), config) == {"officer"}
    helpdesk = person("kerberos", "cn=Helpdesk,ou=groups,dc=example,dc=com", "pki-auditors")
    assert console_roles(helpdesk, config) == {"operator", "auditor"}
    assert console_roles(person("directory", "staff"), config) == frozenset()


def test_a_pin_logon_never_opens_the_console(config: Config) -> None:
    assert console_roles(person("pin", "pki-officers"), config) == frozenset()


def test_roles_given_by_the_logon_are_used_as_they_are(config: Config) -> None:
    local = {"login": "ops1", "method": "operator", "operator_roles": ["auditor", "bogus"]}
    assert console_roles(local, config) == {"auditor"}
    user = console_user(local, config)
    assert user is not None and user.actor == "console:ops1"
    # Given roles win over groups, even when they are none.
    given_none = {**person("directory", "pki-officers"), "operator_roles": []}
    assert console_roles(given_none, config) == frozenset()
    assert console_roles({"operator_roles": "officer", "login": "x"}, config) == frozenset()


def test_empty_settings_give_nobody_a_role(tmp_path: Path) -> None:
    bare = Config.create(tmp_path, {"instance.org": "E", "instance.domain": "example.com"})
    assert console_roles(person("directory", "pki-officers"), bare) == frozenset()
    assert console_roles(None, bare) == frozenset()


def test_require_refuses_a_role_without_the_permission(config: Config) -> None:
    auditor = console_user(person("directory", "pki-auditors"), config)
    assert require(auditor, Permission.READ_AUDIT) is auditor
    with pytest.raises(AuthenticationError):
        require(auditor, Permission.REVOKE)
    with pytest.raises(AuthenticationError):
        require(None, Permission.READ_PEOPLE)
