"""`inmotion serve` (the gateway) and `inmotion tokens create|list|revoke`.

The gateway (Starlette, uvicorn) is imported by the commands that use it: it would cost every
other command, and every `inmotion run` a supervisor restarts, a fifth of a second to start."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from inmotion.cli.common import BrokerOption, JsonOption, fail, open_log, parse_duration_ms, parse_size, print_json

if TYPE_CHECKING:
    from inmotion.gateway import Grant

tokens_app = typer.Typer(help="Tokens for the gateway: create (shown once), list, revoke.", no_args_is_help=True)


def serve_command(
    host: Annotated[str, typer.Option("--host", help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The port to listen on.")] = 8080,
    insecure_no_auth: Annotated[
        bool,
        typer.Option("--insecure-no-auth", help="Serve without tokens (only on a loopback address such as 127.0.0.1)."),
    ] = False,
    max_body: Annotated[str, typer.Option("--max-body", help="Largest request body (1MiB, 512KB...).")] = "1MiB",
    dedupe_window: Annotated[
        str,
        typer.Option("--dedupe-window", help="How long a copy of a POSTed event (same source, id) is not appended."),
    ] = "24h",
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    broker: BrokerOption = None,
) -> None:
    """Serve the gateway: CloudEvents over HTTP in and out (Server-Sent Events), the admin API,
    /metrics and /openapi.json. Every request needs 'Authorization: Bearer <token>' (see
    `inmotion tokens create`)."""
    from inmotion.gateway import Settings, serve

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        fail(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    if not 0 < port < 65536:
        fail(f"--port must be between 1 and 65535, got {port}")
    settings = Settings(
        auth=not insecure_no_auth,
        max_body=parse_size(max_body),
        dedupe_window=parse_duration_ms(dedupe_window) / 1000,
    )
    open_log(broker, create=False).close()  # a missing SQLite file is an error, not a new log
    auth = "no token needed" if insecure_no_auth else "tokens: inmotion tokens create"

    def listening(where: str) -> None:
        typer.echo(f"serving the gateway on {where} (dashboard {where}/, API {where}/openapi.json; {auth})", err=True)

    serve(broker, host, port, settings, log_level=log_level.lower(), listening=listening)


@tokens_app.command("create")
def create_token(
    name: Annotated[str, typer.Argument(help="A name for the token (who or what uses it).")],
    publish: Annotated[
        list[str] | None, typer.Option("--publish", help="Topics it may publish to (wildcards: 'orders.*').")
    ] = None,
    subscribe: Annotated[list[str] | None, typer.Option("--subscribe", help="Topics it may read.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="It may use the admin API and every topic.")] = False,
    rate: Annotated[float | None, typer.Option("--rate", help="Requests a second it may make.")] = None,
    broker: BrokerOption = None,
    json: JsonOption = False,
) -> None:
    """Create a token and print it, once: only its hash is kept (in the log's file)."""
    from inmotion.gateway import Tokens

    with open_log(broker) as log:
        secret, grant = Tokens(log).create(
            name, publish=publish or (), subscribe=subscribe or (), admin=admin, rate=rate
        )
    if json:
        print_json({**grant.document(), "token": secret})
        return
    typer.echo(secret)
    typer.echo(f"created token {name!r}: {_describe(grant)} (shown once: store it now)", err=True)


@tokens_app.command("list")
def list_tokens(broker: BrokerOption = None, json: JsonOption = False) -> None:
    """List the tokens and what each may do (never the tokens themselves)."""
    from inmotion.gateway import Tokens

    with open_log(broker, create=False) as log:
        grants = Tokens(log).list()
    if json:
        for grant in grants:
            print_json(grant.document())
        return
    if not grants:
        typer.echo("no tokens")
    for grant in grants:
        typer.echo(f"{grant.name}  {_describe(grant)}  created {grant.created}")


@tokens_app.command("revoke")
def revoke_token(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    broker: BrokerOption = None,
) -> None:
    """Revoke a token: every gateway on the log refuses it within a second."""
    from inmotion.gateway import Tokens

    with open_log(broker, create=False) as log:
        Tokens(log).revoke(name)
    typer.echo(f"revoked token {name!r}")


def _describe(grant: Grant) -> str:
    parts = ["admin"] if grant.admin else []
    if grant.publish:
        parts.append(f"publish {', '.join(grant.publish)}")
    if grant.subscribe:
        parts.append(f"subscribe {', '.join(grant.subscribe)}")
    if grant.rate is not None:
        parts.append(f"{grant.rate:g} requests/s")
    return "; ".join(parts)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the command line."""
    app.command("serve")(serve_command)
    app.add_typer(tokens_app, name="tokens")
