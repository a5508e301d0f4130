"""`inmotion topics create|list|describe|delete`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from inmotion.cli.common import BrokerOption, JsonOption, open_log, parse_duration_ms, parse_size, print_json
from inmotion.log import TopicConfig, TopicInfo

topics_app = typer.Typer(help="Create, list, describe and delete topics.", no_args_is_help=True)


def _describe(info: TopicInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "partitions": info.config.partitions,
        "retention_ms": info.config.retention_ms,
        "retention_bytes": info.config.retention_bytes,
        "cleanup_policy": info.config.cleanup_policy,
        "records": sum(p.latest - p.earliest for p in info.partitions),
        "offsets": [{"partition": p.partition, "earliest": p.earliest, "latest": p.latest} for p in info.partitions],
    }


@topics_app.command("create")
def create(
    name: str,
    partitions: Annotated[int, typer.Option("--partitions", "-p", help="Number of partitions.")] = 1,
    retention: Annotated[str | None, typer.Option(help="Keep records this long, e.g. 7d, 12h.")] = None,
    retention_bytes: Annotated[str | None, typer.Option(help="Keep at most this much per partition, e.g. 1GB.")] = None,
    compact: Annotated[bool, typer.Option("--compact", help="Keep only the newest record per key.")] = False,
    broker: BrokerOption = None,
) -> None:
    """Create a topic."""
    config = TopicConfig(
        partitions=partitions,
        retention_ms=None if retention is None else parse_duration_ms(retention),
        retention_bytes=None if retention_bytes is None else parse_size(retention_bytes),
        compact=compact,
    )
    with open_log(broker) as log:
        log.create_topic(name, config)
    typer.echo(f"created topic {name} ({partitions} partition{'s' if partitions != 1 else ''})")


@topics_app.command("list")
def list_topics(broker: BrokerOption = None, json: JsonOption = False) -> None:
    """List topics with their partitions and record counts."""
    with open_log(broker, create=False) as log:
        infos = [log.describe_topic(name) for name in log.list_topics()]
    if json:
        for info in infos:
            print_json(_describe(info))
        return
    if not infos:
        typer.echo("no topics (create one with: inmotion topics create NAME)")
        return
    table = Table("topic", "partitions", "records", "policy", box=None)
    for info in infos:
        described = _describe(info)
        table.add_row(info.name, str(info.config.partitions), str(described["records"]), info.config.cleanup_policy)
    Console().print(table)


@topics_app.command("describe")
def describe(name: str, broker: BrokerOption = None, json: JsonOption = False) -> None:
    """Show a topic's configuration and the offsets of each partition."""
    with open_log(broker, create=False) as log:
        info = log.describe_topic(name)
    if json:
        print_json(_describe(info))
        return
    config = info.config
    console = Console()
    console.print(f"[bold]{info.name}[/bold]")
    console.print(f"  partitions:      {config.partitions}")
    console.print(f"  cleanup policy:  {config.cleanup_policy}")
    console.print(f"  retention:       {_ms(config.retention_ms)}")
    console.print(f"  retention bytes: {config.retention_bytes or 'unlimited'}")
    table = Table("partition", "earliest", "latest", "records", box=None)
    for p in info.partitions:
        table.add_row(str(p.partition), str(p.earliest), str(p.latest), str(p.latest - p.earliest))
    console.print(table)


@topics_app.command("delete")
def delete(name: str, broker: BrokerOption = None) -> None:
    """Delete a topic, its records and its consumer groups' offsets."""
    with open_log(broker, create=False) as log:
        log.delete_topic(name)
    typer.echo(f"deleted topic {name}")


def _ms(value: int | None) -> str:
    if value is None:
        return "forever"
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return f"{value}ms"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the command line."""
    app.add_typer(topics_app, name="topics")
