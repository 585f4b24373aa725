"""Prompt files: packaged Markdown templates, overridable from the config's prompts_dir."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from string import Template

from .errors import ConfigError

NAMES = ("system", "research", "validate", "repair", "summarise")


def packaged(name: str) -> str:
    return resources.files("mythline_cli.fleet").joinpath("prompts", f"{name}.md").read_text(encoding="utf-8")


def load(name: str, prompts_dir: Path | None) -> str:
    """The user's copy of a prompt when one exists in ``prompts_dir``, else the packaged one."""
    if prompts_dir is not None:
        path = prompts_dir / f"{name}.md"
        if path.is_file():
            try:
                return path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read prompt ({exc})", path=path) from None
    return packaged(name)


def render(name: str, prompts_dir: Path | None, **values: str) -> str:
    try:
        return Template(load(name, prompts_dir)).substitute(**values)
    except (KeyError, ValueError) as exc:
        where = (prompts_dir / f"{name}.md") if prompts_dir and (prompts_dir / f"{name}.md").is_file() else None
        raise ConfigError(f"prompt template has an unknown or malformed placeholder ({exc}); "
                          f"allowed: {', '.join('$' + k for k in values)}", path=where, key=name) from None
