"""Authenticators: directory logon, PIN / HR database."""

from mailpki.auth.directory_logon import DirectoryAuthenticator
from mailpki.auth.identity import Authenticator, Identity
from mailpki.auth.limiter import LoginLimiter
from mailpki.auth.pins import PinAuthenticator, PinImportReport, import_pins

__all__ = [
    "Authenticator",
    "DirectoryAuthenticator",
    "Identity",
    "LoginLimiter",
    "PinAuthenticator",
    "PinImportReport",
    "import_pins",
]
