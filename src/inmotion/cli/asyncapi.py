"""`inmotion asyncapi MODULE:APP`: an app's AsyncAPI 3.0 document."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from inmotion.cli.common import fail
from inmotion.cli.runtime import load_app
from inmotion.runtime.asyncapi import describe


def asyncapi(
    app_spec: Annotated[str, typer.Argument(metavar="MODULE:APP", help="Where the App is, e.g. billing.service:app")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the document to this file (default: stdout).")
    ] = None,
    api_version: Annotated[
        str, typer.Option("--api-version", help="The version the document gives the API.")
    ] = "1.0.0",
) -> None:
    """Write the AsyncAPI 3.0 document (JSON) of an app: its topics as channels, the events
    its subscribers take as messages with their payload schemas, each subscription a receive
    operation."""
    app = load_app(app_spec)
    try:
        document = describe(app, version=api_version)
    finally:
        app.close()
    text = json.dumps(document, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    if not output.parent.is_dir():
        fail(f"cannot write {output}: directory {output.parent} does not exist")
    with tempfile.NamedTemporaryFile("w", dir=output.parent, prefix=f".{output.name}.", delete=False) as file:
        file.write(text)
    os.replace(file.name, output)  # whole or not at all
    typer.echo(
        f"wrote {output}: {len(document['channels'])} channels, {len(document['components']['messages'])} messages"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the command line."""
    app.command("asyncapi")(asyncapi)
