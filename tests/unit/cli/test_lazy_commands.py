"""The lazily loaded command table of cli/main.py: `--help` lists every command with its
help without importing the command modules, and every entry loads what it names."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mailpki.cli.main import COMMANDS, LazyGroup, app


def test_help_lists_every_command_with_its_help() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())  # unwrapped, boxes gone
    for name, lazy in COMMANDS.items():
        assert f" {name} {' '.join(lazy.help.split())} " in text, name


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_entry_loads_and_its_help_is_the_commands_own(name: str) -> None:
    command = COMMANDS[name].load(name)
    assert command.name == name
    # What the help listed before the table existed: click's short help of the command.
    assert command.get_short_help_str(limit=1000) == COMMANDS[name].help


def test_help_imports_no_command_module() -> None:
    """Run in a fresh interpreter: which mailpki modules `mailpki --help` imports."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mailpki.cli.main import app\n"
        "CliRunner().invoke(app, ['--help'])\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith(('mailpki', 'sqlalchemy', "
        "'cryptography', 'starlette', 'fastapi'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(out) == ["mailpki", "mailpki.cli", "mailpki.cli.main"]


def test_an_unknown_command_is_refused_in_one_line() -> None:
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code != 0
    assert "No such command" in result.output


def test_the_root_group_is_lazy() -> None:
    import typer

    assert isinstance(typer.main.get_command(app), LazyGroup)
