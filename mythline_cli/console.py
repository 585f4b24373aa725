"""Consoles and output helpers that need neither Typer nor pydantic."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console


def is_tty() -> bool:
    return bool(sys.stdout and sys.stdout.isatty())


def out() -> Console:
    # Piped or logged output gets room for a whole table row instead of 80 columns.
    width = None if is_tty() else 160
    return Console(soft_wrap=True, highlight=False, width=width)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
