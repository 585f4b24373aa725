"""``python -m mythline_cli`` and the ``mythline`` console script."""

from __future__ import annotations


def main() -> None:
    from .cli import app

    app(prog_name="mythline")


if __name__ == "__main__":
    main()
