"""``mythline init``: a commented starter config and editable copies of the prompts."""

from __future__ import annotations

from pathlib import Path

import typer

from ._util import boundary, out

HELP = """Write a commented starter mythline.toml and the prompt files next to it.

Never overwrites an existing file unless --force is given. With --base-url of a server on
this machine (localhost, 127.0.0.1), the provider block is written for local inference: no
key, a 30-minute timeout, no resend of a timed-out request, prices at 0 (see
docs/local-models.md).
"""


def init_cli(
    path: Path = typer.Option(Path("mythline.toml"), "--path", help="Where to write the config; the prompts go "
                              "into a prompts/ folder beside it.", dir_okay=False),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
    base_url: str | None = typer.Option(None, "--base-url", help="The provider's OpenAI-compatible URL; a "
                                        "localhost one gets settings for local inference."),
    model: str | None = typer.Option(None, "--model", help="The model name to write (with --base-url)."),
) -> None:
    with boundary():
        from ..config import ConfigError, Provider
        from ..starter import write_starter

        if base_url is not None:
            from pydantic import ValidationError

            try:
                base_url = Provider(base_url=base_url).base_url
            except ValidationError as exc:
                raise ConfigError(str(exc.errors()[0].get("ctx", {}).get("error", exc.errors()[0]["msg"])),
                                  key="--base-url") from None
        written = write_starter(path, force=force, base_url=base_url, model=model)
        con = out()
        for item in written:
            con.print(f"wrote {item}", markup=False)
        con.print(f"Next: edit {path}, then try: mythline --config {path} run world-zones --dry-run", markup=False)
