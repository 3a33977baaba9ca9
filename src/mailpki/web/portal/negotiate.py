"""HTTP side of Kerberos single sign-on (SPNEGO, RFC 4559).

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

__all__ = ["SSO_UNAVAILABLE", "challenge", "sso_refused", "with_mutual_token"]

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
