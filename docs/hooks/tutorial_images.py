"""MkDocs hook: the user guide shows the portal's own pictures.

They live once, in the package (`src/mailpki/web/static/`): the drawn tutorial pictures in
`tutorial/` and the screenshots of the portal, taken by a browser test, in `screenshots/`.
The portal serves them from there; the guide links them there (which works when the
Markdown is read in the repository). For the built site this hook adds them as files under
`tutorial/` and `screenshots/` and points the guide's links at that copy, so MkDocs still
checks every link in strict mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

PACKAGE_STATIC = "../src/mailpki/web/static/"
FOLDERS = {"tutorial": "*.svg", "screenshots": "*.png"}


def _static_dir(config: Any) -> Path:
    return Path(config["docs_dir"]).resolve().parent / "src" / "mailpki" / "web" / "static"


def on_files(files: Files, config: Any) -> Files:
    static = _static_dir(config)
    for folder, pattern in FOLDERS.items():
        for picture in sorted((static / folder).glob(pattern)):
            files.append(
                File(
                    f"{folder}/{picture.name}",
                    src_dir=str(static),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    for folder in FOLDERS:
        markdown = markdown.replace(f"]({PACKAGE_STATIC}{folder}/", f"]({folder}/")
    return markdown
