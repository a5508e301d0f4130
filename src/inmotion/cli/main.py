"""The `inmotion` command line. Subcommand groups live in their own modules."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="inmotion",
    help="Event-driven systems on one SQLite file or on Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def main() -> None:
    app()
