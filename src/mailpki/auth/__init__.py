"""Authenticators: directory logon, PIN / HR database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailpki.base.lazy import lazy_exports

if TYPE_CHECKING:
    from mailpki.auth.directory_logon import (
        DirectoryAuthenticator,
    )
    from mailpki.auth.identity import (
        Authenticator,
        Identity,
    )
    from mailpki.auth.limiter import (
        LoginLimiter,
    )
    from mailpki.auth.pins import (
        PinAuthenticator,
        PinImportReport,
        import_pins,
    )

__all__ = [
    "Authenticator",
    "DirectoryAuthenticator",
    "Identity",
    "LoginLimiter",
    "PinAuthenticator",
    "PinImportReport",
    "import_pins",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "Authenticator": "identity",
        "DirectoryAuthenticator": "directory_logon",
        "Identity": "identity",
        "LoginLimiter": "limiter",
        "PinAuthenticator": "pins",
        "PinImportReport": "pins",
        "import_pins": "pins",
    },
)
