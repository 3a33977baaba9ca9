"""MkDocs hook: the user guide shows the portal's own tutorial pictures.

They live once, in the package (`src/mailpki/web/static/tutorial/`), where the portal
serves them; the guide links them there (which works when the Markdown is read in the
repository). For the built site this hook adds them as files under `tutorial/` and points
the guide's links at that copy, so MkDocs still checks every link in strict mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

PACKAGE_LINK = "../src/mailpki/web/static/tutorial/"
SITE_FOLDER = "tutorial/"


def _static_dir(config: Any) -> Path:
    return Path(config["docs_dir"]).resolve().parent / "src" / "mailpki" / "web" / "static"


def on_files(files: Files, config: Any) -> Files:
    static = _static_dir(config)
    for picture in sorted((static / "tutorial").glob("*.svg")):
        files.append(
            File(
                f"tutorial/{picture.name}",
                src_dir=str(static),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    return markdown.replace(f"]({PACKAGE_LINK}", f"]({SITE_FOLDER}")
