"""The `smtp.*` settings, shared by the instance's and the recovery service's file.

Kept apart from `notify.mail` (which needs SQLAlchemy for the outbox) so that loading a
configuration imports no more than the settings themselves.
"""

from __future__ import annotations

from mailpki.base.settings import Setting, choice, int_range, optional_text

# Before the portal these settings were mail.*; files that still use the old names load.
SMTP_RENAMED: dict[str, str | None] = {
    "mail.smtp_host": "smtp.host",
    "mail.smtp_port": "smtp.port",
    "mail.sender": "smtp.from",
    "mail.starttls": "smtp.starttls",
    "mail.username": "smtp.username",
    "mail.password_file": "smtp.password_file",
    "mail.transport": None,  # now: SMTP when smtp.host is set, else .eml files in outbox/
    "mail.folder": None,
}


def smtp_schema(*, sender_default: str, sender_help: str) -> dict[str, Setting]:
    """The `smtp.*` settings, the same in the instance's and the recovery service's file."""
    return {
        "smtp.host": Setting(
            optional_text, "", "SMTP server; empty: each mail is an .eml file in the outbox/ folder"
        ),
        "smtp.port": Setting(int_range(1, 65535), 25, "SMTP port"),
        "smtp.from": Setting(optional_text, sender_default, sender_help),
        "smtp.starttls": Setting(choice("true", "false"), "false", "use STARTTLS"),
        "smtp.username": Setting(optional_text, "", "SMTP login (empty: no login)"),
        "smtp.password_file": Setting(
            optional_text, "", "file holding the SMTP password (relative to the home)"
        ),
    }


__all__ = ["SMTP_RENAMED", "smtp_schema"]
