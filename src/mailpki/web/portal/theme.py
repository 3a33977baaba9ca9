"""Templates and static files of the portal, with the instance's `theme/` folder first.

`HOME/theme/templates/NAME.html` replaces a page template, `HOME/theme/static/NAME`
a stylesheet, the logo or a picture; nothing in the package is touched. Static paths
are checked against a strict pattern and must resolve inside their folder, so neither
a request nor a theme symlink can reach anything else.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from mailpki.ca.serials import show_serial

PACKAGE_ROOT = Path(str(resources.files("mailpki.web")))
_STATIC_RE = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*\.(css|svg|png|jpg|ico|woff2)")
MEDIA_TYPES = {
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpg": "image/jpeg",
    "ico": "image/x-icon",
    "woff2": "font/woff2",
}
MAX_STATIC_BYTES = 2 * 1024 * 1024


class Theme:
    def __init__(self, home: Path) -> None:
        theme = home / "theme"
        self.static_roots = [theme / "static", PACKAGE_ROOT / "static"]
        loaders = [
            FileSystemLoader(str(theme / "templates")),
            FileSystemLoader(str(PACKAGE_ROOT / "templates")),
        ]
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(("html",), default=True),
            undefined=StrictUndefined,  # a typo in a theme template fails loudly
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._versions: dict[str, str] = {}
        self.env.globals["static_url"] = self.static_url
        # `{{ c.serial | serial }}`: a serial as `mailpki certs list` prints it (zero-padded).
        self.env.filters["serial"] = show_serial

    def static_file(self, name: str) -> tuple[Path, str] | None:
        """(file, media type) for a static path, theme first; None for anything else."""
        match = _STATIC_RE.fullmatch(name)
        if match is None or len(name) > 200:
            return None
        for root in self.static_roots:
            candidate = root / name
            try:
                resolved = candidate.resolve(strict=True)
                inside = resolved.is_relative_to(root.resolve(strict=True))
            except (OSError, RuntimeError):
                continue
            if inside and resolved.is_file() and resolved.stat().st_size <= MAX_STATIC_BYTES:
                return resolved, MEDIA_TYPES[match.group(1)]
        return None

    def static_url(self, name: str) -> str:
        """`/static/NAME?v=HASH`: cached for a long time, refreshed when the file changes."""
        version = self._versions.get(name)
        if version is None:
            found = self.static_file(name)
            version = hashlib.sha256(found[0].read_bytes()).hexdigest()[:12] if found else "0"
            self._versions[name] = version
        return f"/static/{name}?v={version}"

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)
