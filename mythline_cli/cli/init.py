"""``mythline init``: a commented starter config and editable copies of the prompts."""

from __future__ import annotations

from pathlib import Path

import typer

from ._util import boundary, out

HELP = """Write a commented starter mythline.toml and the prompt files next to it.

Never overwrites an existing file unless --force is given.
"""


def init_cli(
    path: Path = typer.Option(Path("mythline.toml"), "--path", help="Where to write the config; the prompts go "
                              "into a prompts/ folder beside it.", dir_okay=False),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    with boundary():
        from ..starter import write_starter

        written = write_starter(path, force=force)
        con = out()
        for item in written:
            con.print(f"wrote {item}", markup=False)
        con.print(f"Next: edit {path}, then try: mythline --config {path} run world-zones --dry-run", markup=False)
