"""The portal screenshots in the docs and the portal's tutorial: every one referenced
exists, and together they reference exactly the set the browser test takes
(tests/e2e/screenshot_names.py)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.screenshot_names import HEIGHT, MAX_BYTES, SCREENSHOTS, WIDTH

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
STATIC = ROOT / "src" / "mailpki" / "web" / "static"
FOLDER = STATIC / "screenshots"
TUTORIAL = ROOT / "src" / "mailpki" / "web" / "templates" / "tutorial.html"
REFERENCE = re.compile(r"screenshots/([A-Za-z0-9_.-]+\.png)")
IMAGE = re.compile(
    r"!\[([^\]]*)\]\(\.\./src/mailpki/web/static/(screenshots/[A-Za-z0-9_.-]+\.png)\)"
)


def referenced() -> dict[str, list[str]]:
    """Screenshot name -> the docs pages (and the tutorial template) that show it."""
    found: dict[str, list[str]] = {}
    for page in [*sorted(DOCS.rglob("*.md")), TUTORIAL]:
        for name in REFERENCE.findall(page.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(page.name)
    return found


def test_the_guide_and_the_portal_tutorial_both_show_screenshots() -> None:
    pages = {page for pages in referenced().values() for page in pages}
    assert {"user-guide.md", "tutorial.html"} <= pages


def test_the_names_are_unique_pngs() -> None:
    assert len(set(SCREENSHOTS)) == len(SCREENSHOTS)
    assert all(re.fullmatch(r"[a-z0-9-]+\.png", name) for name in SCREENSHOTS)


def test_every_referenced_screenshot_exists() -> None:
    missing = {name: pages for name, pages in referenced().items() if not (FOLDER / name).is_file()}
    assert missing == {}


def test_the_docs_show_exactly_the_screenshots_the_browser_test_takes() -> None:
    assert sorted(referenced()) == sorted(SCREENSHOTS)


def test_the_folder_holds_exactly_those_screenshots() -> None:
    assert sorted(p.name for p in FOLDER.iterdir()) == sorted(SCREENSHOTS)


def test_every_screenshot_has_alternative_text() -> None:
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        shown = IMAGE.findall(text)
        assert len(shown) == len(REFERENCE.findall(text)), f"{page.name}: not an ![alt](...) image"
        for alt, _ in shown:
            assert len(alt.strip()) >= 20, f"{page.name}: alternative text too short: {alt!r}"


def test_screenshots_are_small_pngs_of_the_viewport() -> None:
    for name in SCREENSHOTS:
        data = (FOLDER / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        size = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert size == (WIDTH, HEIGHT), name
        assert len(data) <= MAX_BYTES, f"{name}: {len(data)} bytes; retake with scripts/screenshots"
