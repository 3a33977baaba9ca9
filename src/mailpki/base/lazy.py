"""Package re-exports that import their module on first use (PEP 562).

A package's `__init__` that imports every submodule makes `import mailpki.auth.kerberos`
(or a settings schema next to it) pay for the whole package: SQLAlchemy, ldap3,
dnspython. Short commands such as `mailpki certs list` must import only what they use,
so the packages whose parts are heavy re-export through `lazy_exports` instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module-level `__getattr__` for `package`: `exports` maps each public name to the
    submodule (relative to the package) that defines it."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
