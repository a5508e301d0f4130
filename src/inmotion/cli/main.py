"""The `inmotion` command line. Subcommand groups live in their own modules, each adding its
commands with `register(app)`; a command imports only its own module (and what that needs), so
`inmotion sql query` does not wait for the runtime, the gateway or the workflows to load."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from inmotion.cli.common import explain
from inmotion.errors import InmotionError

COMMANDS = {
    "topics": "topics",
    "publish": "records",
    "tail": "records",
    "groups": "runtime",
    "dlq": "runtime",
    "replay": "runtime",
    "run": "runtime",
    "rules": "rules",
    "route": "rules",
    "trace": "trace",
    "workflows": "workflows",
    "asyncapi": "asyncapi",
    "serve": "gateway",
    "tokens": "gateway",
    "sql": "sql",
}
"""Each command, and the module of `inmotion.cli` that registers it (in --help's order)."""


def build(command: str | None = None) -> typer.Typer:
    """The command line: every command, or only `command`'s module's if it names one."""
    app = typer.Typer(
        name="inmotion",
        help="Event-driven systems on one SQLite file or on Apache Kafka.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_commands)  # a group even when one command is registered: typer runs a lone command bare
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        importlib.import_module(f"inmotion.cli.{module}").register(app)
    return app


def _commands() -> None:
    """Event-driven systems on one SQLite file or on Apache Kafka."""


def __getattr__(name: str) -> Any:
    """`app`: the whole command line (for tests and tools that import it)."""
    if name == "app":
        return build()
    raise AttributeError(f"module 'inmotion.cli.main' has no attribute {name!r}")


def main() -> None:
    try:
        build(sys.argv[1] if len(sys.argv) > 1 else None)()
    except InmotionError as error:
        typer.echo(f"error: {explain(error)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(141)
