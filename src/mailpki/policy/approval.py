"""Approval rules as data: when a request is approved without an officer.

The rules only read facts (what the directory says about the person); they do no I/O.
Every decision carries its reasons, which the audit log keeps.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApprovalRules:
    auto: bool = True
    allowed_domains: tuple[str, ...] = ()
    # If set, the person must be a member of one of these (group DN or name, any case).
    required_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Facts:
    """What the directory says, as far as the rules care."""

    found: bool
    enabled: bool
    mail: str | None
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    approved: bool
    reasons: tuple[str, ...]


def _group_names(groups: tuple[str, ...]) -> set[str]:
    """Group DNs and their first RDN value (cn=staff,ou=groups,... -> staff), lower case."""
    names: set[str] = set()
    for group in groups:
        value = group.strip().lower()
        names.add(value)
        first = value.split(",", 1)[0]
        if "=" in first:
            names.add(first.split("=", 1)[1].strip())
    return names


def in_any_group(groups: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    """Whether one of `groups` (DNs or names) is one of `wanted` (DNs or names)."""
    return bool({g.strip().lower() for g in wanted if g.strip()} & _group_names(groups))


def decide(rules: ApprovalRules, facts: Facts) -> Decision:
    """Approve only if every rule holds; otherwise list each one that failed."""
    failed: list[str] = []
    if not facts.found:
        failed.append("no directory entry")
    else:
        if not facts.enabled:
            failed.append("the account is disabled")
        if not facts.mail:
            failed.append("the entry has no mail address")
        elif rules.allowed_domains:
            domain = facts.mail.rsplit("@", 1)[-1].lower()
            if domain not in {d.lower() for d in rules.allowed_domains}:
                failed.append(f"mail domain {domain} is not allowed")
        if rules.required_groups:
            wanted = {g.strip().lower() for g in rules.required_groups}
            if not wanted & _group_names(facts.groups):
                failed.append(f"not a member of {' or '.join(rules.required_groups)}")
    if failed:
        return Decision(False, tuple(failed))
    if not rules.auto:
        return Decision(False, ("automatic approval is off: an officer decides",))
    passed = ["entry exists", "account enabled", "mail domain allowed"]
    if rules.required_groups:
        passed.append("group membership")
    return Decision(True, tuple(passed))
