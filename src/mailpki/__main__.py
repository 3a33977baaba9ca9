"""`python -m mailpki` runs the command line."""

from mailpki.cli.main import run

run()
