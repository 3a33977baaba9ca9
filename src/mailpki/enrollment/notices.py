"""Mail to a subscriber whose certificate was revoked: why, when, and what to do.

Queued in the revocation's own transaction (through the outbox, like every notice), so
the revocation and its mail commit together. The text comes from the `revocation.txt`
and `revocation.html` templates, replaceable in the instance's theme folder.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from mailpki.enrollment.invitations import render_template
from mailpki.notify.mail import is_plain_address, queue

__all__ = ["REVOCATION_KIND", "queue_revocation_notice", "reason_advice"]

REVOCATION_KIND = "cert.revoked"
_ORG_IN_SUBJECT_MAX = 120

# RFC 5280 reason names (as stored) -> (words for a person, what it means for them).
_REASONS: dict[str, tuple[str, str]] = {
    "key_compromise": (
        "the private key may be known to someone else",
        "Do not use this certificate or its key to sign any more. Mail signed with it "
        "before may now be shown as untrustworthy.",
    ),
    "affiliation_changed": (
        "your details or role in the organisation changed",
        "A certificate with your current details can be issued to you.",
    ),
    "superseded": (
        "it was replaced by a newer certificate",
        "Use the newer certificate; nothing else is needed.",
    ),
    "cessation_of_operation": (
        "it is no longer needed (for example, the file was never downloaded)",
        "If you were waiting for this certificate, get a new one with the link below.",
    ),
    "certificate_hold": ("it is on hold", "Your IT team will tell you when it is released."),
    "privilege_withdrawn": (
        "the right to hold it was withdrawn",
        "Ask your IT team if you think this is a mistake.",
    ),
}
_UNSPECIFIED = ("no reason was given", "Ask your IT team if you do not know why.")


def reason_advice(reason: str | None) -> tuple[str, str]:
    """The reason in plain words and the advice that goes with it."""
    return _REASONS.get(reason or "", _UNSPECIFIED)


def queue_revocation_notice(
    session: Session,
    *,
    mail: str,
    serial: str,
    reason: str | None,
    revoked_at: datetime,
    org: str,
    portal_url: str,
    theme: Path | None,
) -> bool:
    """Queue the notice in the caller's transaction; False (nothing queued) when the
    certificate names no plain mail address to write to."""
    if not is_plain_address(mail):
        return False
    words, advice = reason_advice(reason)
    values = {
        "mail": mail,
        "org": org,
        "serial": serial,
        "date": revoked_at.strftime("%Y-%m-%d %H:%M UTC"),
        "reason": words,
        "advice": advice,
        "link": portal_url.rstrip("/") + "/",
    }
    who = " ".join(org.split())[:_ORG_IN_SUBJECT_MAX] or "Your organisation"
    queue(
        session,
        kind=REVOCATION_KIND,
        to=mail,
        subject=f"{who}: your e-mail certificate was revoked",
        body=render_template("revocation.txt", theme, values),
        html=render_template("revocation.html", theme, values),
        now=revoked_at,
    )
    return True
