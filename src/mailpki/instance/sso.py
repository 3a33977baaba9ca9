"""Single sign-on use cases: Kerberos (Negotiate) logon, audited like a password logon.

A refusal is audited as `logon.refused` with its reason and the principal when the
ticket got far enough to name one; a success as `logon.succeeded` with the entry's DN.
The identity that comes out is the same as a password logon's, so approval treats both
alike.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from mailpki.auth.identity import Identity
from mailpki.auth.kerberos import KerberosRefused
from mailpki.errors import AuthenticationError
from mailpki.instance.instance import Instance

__all__ = ["NegotiateOutcome", "audit_logon", "negotiate"]


@dataclass(frozen=True)
class NegotiateOutcome:
    identity: Identity
    principal: str
    reply: str | None  # base64 mutual-authentication token for WWW-Authenticate


def audit_logon(
    instance: Instance,
    *,
    method: str,
    login: str,
    actor: str,
    reason: str | None = None,
    dn: str | None = None,
) -> None:
    """One `logon.refused` (with `reason`) or `logon.succeeded` (with `dn`) record."""
    data = {"login": login[:256], "method": method}
    if reason is not None:
        event, data = "logon.refused", {**data, "reason": reason[:300]}
    else:
        event, data = "logon.succeeded", {**data, "dn": dn or ""}
    with instance.db.transaction() as session:
        instance.audit.append(session, event, actor=actor, data=data)


def negotiate(instance: Instance, header: str, *, source: str, actor: str) -> NegotiateOutcome:
    """Log on with the Kerberos ticket in an `Authorization: Negotiate …` header.

    Raises AuthenticationError (audited, counted by the lockout) with a reason a person
    can act on; a header that is not Negotiate at all is refused the same way."""
    try:
        logon = instance.kerberos_logon.authenticate(header, source=source)
    except AuthenticationError as exc:
        principal = exc.principal if isinstance(exc, KerberosRefused) else ""
        audit_logon(instance, method="kerberos", login=principal, actor=actor, reason=str(exc))
        raise
    audit_logon(
        instance, method="kerberos", login=logon.principal, actor=actor, dn=logon.identity.entry.dn
    )
    reply = base64.b64encode(logon.reply).decode("ascii") if logon.reply else None
    return NegotiateOutcome(identity=logon.identity, principal=logon.principal, reply=reply)
