"""The ``cairn`` command: its parser, one module per command, the terminal's live side."""

from engine.cli.main import main
from engine.cli.parser import build_parser

__all__ = ["build_parser", "main"]
