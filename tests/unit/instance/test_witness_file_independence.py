"""How `audit verify` judges a witness file: independent only if the instance cannot
rewrite it. The append-only flag is read from a real file made append-only with
`chattr +a` (that test needs root and a file system that takes the flag, and says so
when it skips)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mailpki.instance import audit_witnesses
from mailpki.instance.audit_witnesses import file_independence


def test_a_file_inside_the_home_is_not_independent(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "audit").mkdir(parents=True)
    witness = home / "audit" / "witness.log"
    witness.write_text("")
    independent, why = file_independence(witness, home)
    assert not independent and "inside the home folder" in why
    # A path that only looks outside (.. back in, a symlink into the home) is inside too.
    assert not file_independence(home / "audit" / ".." / "audit" / "witness.log", home)[0]
    link = tmp_path / "link.log"
    link.symlink_to(witness)
    assert not file_independence(link, home)[0]


def test_a_file_the_instance_can_rewrite_is_not_independent(tmp_path: Path) -> None:
    witness = tmp_path / "witness.log"
    witness.write_text("")
    independent, why = file_independence(witness, tmp_path / "home")
    assert not independent and "chattr +a" in why


def test_a_file_that_does_not_exist_yet_is_not_independent(tmp_path: Path) -> None:
    independent, _ = file_independence(tmp_path / "new.log", tmp_path / "home")
    assert not independent


def test_a_file_the_instance_cannot_write_keeps_its_copies_but_takes_no_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    witness = tmp_path / "witness.log"
    witness.write_text("")
    # root may write any file: the permission check is what the code asks, so ask it.
    monkeypatch.setattr(audit_witnesses.os, "access", lambda path, mode: False)
    independent, why = file_independence(witness, tmp_path / "home")
    assert independent and "cannot add checkpoints" in why


def test_an_append_only_file_is_independent(tmp_path: Path) -> None:
    witness = tmp_path / "witness.log"
    witness.write_text("")
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("chattr +a needs the chattr tool and root")
    done = subprocess.run(["chattr", "+a", str(witness)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this file system does not take chattr +a: {done.stderr.strip()}")
    try:
        independent, why = file_independence(witness, tmp_path / "home")
        assert independent and "append-only" in why
        with witness.open("a") as handle:  # the instance can still add its lines
            handle.write("line\n")
        with pytest.raises(PermissionError):
            witness.write_text("rewritten\n")
    finally:
        subprocess.run(["chattr", "-a", str(witness)], check=True)
