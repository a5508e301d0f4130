"""The `inmotion` command line. Subcommand groups live in their own modules."""

from __future__ import annotations

import sys

import typer

from inmotion.cli.asyncapi import asyncapi
from inmotion.cli.common import explain
from inmotion.cli.gateway import serve_command, tokens_app
from inmotion.cli.records import publish, tail
from inmotion.cli.rules import RULES_FILE_HELP, route, rules_app
from inmotion.cli.runtime import dlq_app, groups_app, replay, run
from inmotion.cli.sql import sql_app
from inmotion.cli.topics import topics_app
from inmotion.cli.trace import trace
from inmotion.cli.workflows import cancel, describe, list_instances, retry, workflows_app
from inmotion.errors import InmotionError

app = typer.Typer(
    name="inmotion",
    help="Event-driven systems on one SQLite file or on Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(topics_app, name="topics")
app.command("publish")(publish)
app.command("tail")(tail)
app.add_typer(groups_app, name="groups")
app.add_typer(dlq_app, name="dlq")
app.command("replay")(replay)
app.command("run")(run)
app.add_typer(rules_app, name="rules")
app.command("route", epilog=RULES_FILE_HELP)(route)
app.command("trace")(trace)
app.add_typer(workflows_app, name="workflows")
app.command("asyncapi")(asyncapi)
app.command("serve")(serve_command)
app.add_typer(tokens_app, name="tokens")
app.add_typer(sql_app, name="sql")
workflows_app.command("list")(list_instances)
workflows_app.command("describe")(describe)
workflows_app.command("cancel")(cancel)
workflows_app.command("retry")(retry)


def main() -> None:
    try:
        app()
    except InmotionError as error:
        typer.echo(f"error: {explain(error)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(141)
