"""The tutorial page, its pictures and docs/user-guide.md are self-contained and CSP-safe."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "src" / "mailpki" / "web"
STATIC = WEB / "static"
TEMPLATE = WEB / "templates" / "tutorial.html"
GUIDE = ROOT / "docs" / "user-guide.md"
SVGS = sorted((STATIC / "tutorial").glob("*.svg"))
SVG_NS = "{http://www.w3.org/2000/svg}"


def test_there_are_pictures() -> None:
    assert len(SVGS) >= 4


@pytest.mark.parametrize("svg", SVGS, ids=lambda p: p.name)
def test_svg_is_self_contained(svg: Path) -> None:
    text = svg.read_text(encoding="utf-8")
    root = ET.fromstring(text)
    assert root.tag == f"{SVG_NS}svg"
    assert root.get("viewBox")
    title = root.find(f"{SVG_NS}title")
    assert title is not None and (title.text or "").strip()
    lowered = text.lower()
    assert "<script" not in lowered
    assert "<foreignobject" not in lowered
    assert not re.search(r"""href\s*=\s*["']\s*(https?:|//|data:)""", lowered)
    assert "url(http" not in lowered and "@import" not in lowered
    assert not re.search(r"\son[a-z]+\s*=", lowered), "event handler attribute"
    for element in root.iter():
        assert not any(name.lower().startswith("on") for name in element.attrib)
    assert len(text.encode()) < 8 * 1024


def test_template_is_csp_safe() -> None:
    text = TEMPLATE.read_text(encoding="utf-8").lower()
    assert text.startswith('{% extends "base.html" %}')
    assert "<script" not in text
    assert "style=" not in text
    assert "<style" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']\s*(https?:|//)""", text)


def test_template_static_files_exist() -> None:
    names = re.findall(r"""static_url\(\s*['"]([^'"]+)['"]\s*\)""", TEMPLATE.read_text("utf-8"))
    assert "tutorial.css" in names
    assert any(name.endswith(".svg") for name in names)
    for name in names:
        assert (STATIC / name).is_file(), name


def test_template_anchors_resolve() -> None:
    text = TEMPLATE.read_text("utf-8")
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    for target in re.findall(r'href="#([^"]+)"', text):
        assert target in ids, target


def test_template_images_have_alt_text() -> None:
    for tag in re.findall(r"<img\b[^>]*>", TEMPLATE.read_text("utf-8")):
        match = re.search(r'\balt="([^"]*)"', tag)
        assert match and len(match.group(1)) > 20, tag


def test_guide_images_exist() -> None:
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", GUIDE.read_text("utf-8"))
    assert images
    for image in images:
        assert (GUIDE.parent / image).resolve().is_file(), image


@pytest.mark.parametrize("path", [TEMPLATE, GUIDE], ids=["tutorial", "user-guide"])
def test_every_client_is_told_to_trust_the_root(path: Path) -> None:
    """After the PKCS#12 import, NSS (Thunderbird) leaves the root untrusted for mail and the
    person's own certificate cannot be selected; Apple Mail wants the root trusted too."""
    text = " ".join(path.read_text("utf-8").split())
    assert "NAME.p12" not in text  # the real file name, not a placeholder
    assert "Authorities" in text and "Edit Trust" in text
    assert "This certificate can identify mail users" in text  # Thunderbird
    assert "Always Trust" in text and "Secure Mail (S/MIME)" in text  # Apple Mail
    assert "certmgr.msc" in text and "Trusted Root Certification Authorities" in text  # Outlook
