"""``mythline keys set|list|rm|path``: the key store scheduled runs read their secrets from."""

from __future__ import annotations

import sys

import typer

from ..errors import UsageError
from ._util import boundary, out

app = typer.Typer(no_args_is_help=True, help="Store API keys and webhook URLs for scheduled runs, which do not "
                  "see your shell's variables. A key is named by its environment variable "
                  "(e.g. OPENROUTER_API_KEY); when that variable is set it wins over the store. "
                  "See docs/scheduling.md.")

SET_HELP = """Store a key under NAME, the environment variable it stands in for.

The value is read from a hidden prompt, or from standard input when that is not a
terminal; never from the command line, where other users see it in `ps`. The file is
written atomically, readable by you only (0600).

Examples:

\b
  mythline keys set OPENROUTER_API_KEY
  pass show openrouter | mythline keys set OPENROUTER_API_KEY
"""


def _print(text: str) -> None:
    out().print(text, markup=False, highlight=False)


def set_cli(name: str = typer.Argument(..., help="The environment variable's name, e.g. OPENROUTER_API_KEY.")) -> None:
    with boundary():
        from .. import keys

        keys.check_name(name)
        if sys.stdin is not None and sys.stdin.isatty():
            value = typer.prompt(f"Value for {name}", hide_input=True, prompt_suffix=": ", show_default=False)
        else:
            value = sys.stdin.read() if sys.stdin is not None else ""
            lines = value.strip("\r\n").splitlines()
            if len(lines) > 1:
                raise UsageError(f"standard input holds {len(lines)} lines; give {name}'s value as one line")
        where = keys.store(name, value)
        _print(f"stored {name} in {where}")


def list_cli() -> None:
    with boundary():
        import os

        from .. import keys

        stored = keys.load()
        if not stored:
            _print(f"no keys stored in {keys.path()}; add one with: mythline keys set NAME")
            return
        for name in sorted(stored):
            shadow = "  (the environment variable is set too, and wins)" if os.environ.get(name, "").strip() else ""
            typer.echo(name + shadow)


def rm_cli(name: str = typer.Argument(..., help="The key's name.")) -> None:
    with boundary():
        from .. import keys

        if not keys.remove(name):
            raise UsageError(f"no key {name} in {keys.path()}; see the stored names with: mythline keys list")
        _print(f"removed {name} from {keys.path()}")


def path_cli() -> None:
    with boundary():
        from .. import keys

        typer.echo(str(keys.path()))


app.command("set", help=SET_HELP)(set_cli)
app.command("list", help="List the stored key names (never their values).")(list_cli)
app.command("rm", help="Remove a stored key.")(rm_cli)
app.command("path", help="Print the key store's file (set MYTHLINE_KEYS_FILE to move it).")(path_cli)
