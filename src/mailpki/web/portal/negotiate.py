"""HTTP side of single sign-on: Kerberos (SPNEGO, RFC 4559) and OpenID Connect messages.

With Kerberos on, an unauthenticated visit to the portal or the officer console gets
`401` with `WWW-Authenticate: Negotiate` and the logon form as the body: a browser that
has a ticket for the site answers with `Authorization: Negotiate <token>`, one without
shows the form. A logon answers with the server's mutual-authentication token. A
refused ticket gets the form again, with the reason and no new challenge (so the
browser does not loop).
"""

from __future__ import annotations

from starlette.responses import Response

from mailpki.errors import AuthenticationError

__all__ = [
    "OIDC_UNAVAILABLE",
    "SSO_UNAVAILABLE",
    "challenge",
    "oidc_refused",
    "sso_refused",
    "with_mutual_token",
]

OIDC_UNAVAILABLE = (
    "Logon with your organisation's account is not available just now: try again in a "
    "few minutes, or log on with your password."
)

SSO_UNAVAILABLE = (
    "Logon with your network account (Kerberos) is not available just now: "
    "log on with your password instead."
)


def challenge(response: Response) -> Response:
    """The page as a 401 Negotiate challenge."""
    response.status_code = 401
    response.headers["WWW-Authenticate"] = "Negotiate"
    return response


def with_mutual_token(response: Response, reply: str | None) -> Response:
    if reply:
        response.headers["WWW-Authenticate"] = f"Negotiate {reply}"
    return response


def sso_refused(exc: AuthenticationError) -> str:
    return (
        f"Your network logon (Kerberos) was refused: {exc}. "
        "Log on with your password instead, or ask IT."
    )


def oidc_refused(exc: AuthenticationError) -> str:
    return f"Your logon with your organisation's account was refused: {exc}."
