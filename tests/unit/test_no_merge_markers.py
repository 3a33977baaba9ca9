"""No file of the project holds the conflict markers of an unfinished merge (a template
with them renders them to every visitor)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("src", "docs", "tests", "benchmarks", "scripts", "deploy")
SKIP_PARTS = {"node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}
MARKERS = ("<" * 7 + " ", ">" * 7 + " ")  # written apart, so this file has none


def text_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and not SKIP_PARTS.intersection(path.parts):
                files.append(path)
    return [f for f in files if f.exists()]


def test_no_file_holds_merge_conflict_markers() -> None:
    found = []
    for path in text_files():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError):
            continue  # binary files (images, keys)
        found += [
            f"{path.relative_to(ROOT)}:{n}"
            for n, line in enumerate(lines, 1)
            if line.startswith(MARKERS)
        ]
    assert found == [], f"merge conflict markers in: {found}"
