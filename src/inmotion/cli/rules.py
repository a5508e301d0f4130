"""`inmotion rules test|check`: try a pattern on an event, validate a rules file; `inmotion route`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from inmotion.cli.common import BrokerOption, JsonOption, fail, open_log, print_json
from inmotion.errors import InmotionError, InvalidConfig, InvalidEvent, InvalidPattern
from inmotion.log import DEFAULT_SESSION_TIMEOUT
from inmotion.patterns import Pattern
from inmotion.patterns.model import FieldCheck
from inmotion.routing.router import RouteTotals, RulesFile, missing_topics
from inmotion.routing.router import route as route_rules
from inmotion.routing.rules import load_rules
from inmotion.routing.store import RuleStore
from inmotion.runtime import App
from inmotion.runtime.reports import reporter

rules_app = typer.Typer(help="Test event patterns and check rules files.", no_args_is_help=True)

EXIT_MATCH, EXIT_NO_MATCH, EXIT_INVALID = 0, 1, 2

RULES_FILE_HELP = """\
Rules file (YAML), its keys:

rules: the list of rules (required). unmatched: a topic for events no rule matches.

A rule: name (unique, required); pattern (an EventBridge event pattern, as YAML or as JSON
text, required); targets (a non-empty list, required); sources (a topic or a list of them;
none: every source topic); transform (paths: {variable: JSONPath}, template: text with
<variable>, as EventBridge's input transformer); description.

A target names one of: topic: TOPIC; handler: package.module:function; http: URL, with
mode (binary or structured CloudEvent, default binary), timeout (seconds, default 5) and
headers ({name: value}). A handler or HTTP target may add retry (attempts 5, backoff 0.2,
multiplier 2, max_backoff 30 seconds, jittered) and dead_letter: TOPIC (default: its own
delivery topic's .dlq).

A file is refused, nothing routed, if a key is unknown or given twice, a pattern is
invalid, or aliases expand it past 100,000 nodes.
"""


def _text(argument: str, what: str) -> str:
    """JSON given inline, or @path to read it from a file (@- for stdin)."""
    if not argument.startswith("@"):
        return argument
    name = argument[1:]
    try:
        return typer.get_text_stream("stdin").read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {what} file {name!r}: {exc.strerror or exc}", EXIT_INVALID)
    except UnicodeDecodeError as exc:
        fail(
            f"cannot read {what} file {name!r}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})",
            EXIT_INVALID,
        )


def _event(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidEvent("<event>", f"malformed JSON: {exc}") from exc
    except RecursionError:
        raise InvalidEvent("<event>", "nested too deeply to read") from None
    if not isinstance(document, dict):
        raise InvalidEvent("<event>", "an event is a JSON object")
    return document


def _check_document(check: FieldCheck) -> dict[str, Any]:
    return {
        "alternative": check.alternative,
        "field": check.field,
        "values": check.values,
        "condition": json.loads(check.condition),
        "ok": check.ok,
    }


@rules_app.command("test")
def try_pattern(
    pattern: Annotated[str, typer.Option("--pattern", "-p", help="The event pattern: JSON text, or @file.")],
    event: Annotated[str, typer.Option("--event", "-e", help="The event: JSON text, or @file (@- for stdin).")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing; answer with the exit code.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Does the pattern match the event? Exit 0 if it matches, 1 if not, 2 if either is invalid.

    Prints the verdict and each field of the pattern with the values the event has there; with
    --json, one object: {"match": true|false, "fields": [{"alternative", "field", "values",
    "condition", "ok"}, ...]}, "alternative" counting the ways $or gives, from 1.
    """
    try:
        compiled = Pattern(_text(pattern, "pattern"))
        document = _event(_text(event, "event"))
        matched = compiled.matches(document)
        checks = compiled.check_fields(document)
    except InmotionError as error:
        fail(str(error), EXIT_INVALID)
    if as_json:
        print_json({"match": matched, "fields": [_check_document(check) for check in checks]})
    elif not quiet:
        typer.echo("match" if matched else "no match")
        for line in compiled.explain(document):
            typer.echo(f"  {line}")
        if not matched and any(
            all(c.ok for c in checks if c.alternative == n) for n in {c.alternative for c in checks}
        ):
            typer.echo("  (each field matches, but only in different elements of one array)")
    raise typer.Exit(EXIT_MATCH if matched else EXIT_NO_MATCH)


@rules_app.command("check", epilog=RULES_FILE_HELP)
def check_file(
    path: Annotated[Path, typer.Argument(help="A rules file (YAML).")],
    broker: BrokerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Validate a rules file: patterns, targets, and that the topics it names (sources, topic
    targets) exist. Exit 0 if valid, 1 if topics are missing, 2 if the file is invalid.

    Prints each rule with its sources and targets; with --json, one object per rule:
    {"file", "rule", "sources", "targets"} (no sources: every source topic).
    """
    try:
        rule_set = load_rules(path)
    except InmotionError as error:
        fail(str(error), EXIT_INVALID)
    try:
        with open_log(broker) as log:
            missing = missing_topics(log, rule_set)
    except InmotionError as error:
        fail(str(error))
    if missing:
        fail(f"{path}: missing topics: {', '.join(missing)} (create them: inmotion topics create)")
    if as_json:
        for rule in rule_set.rules:
            described = [target.describe() for target in rule.targets]
            print_json({"file": str(path), "rule": rule.name, "sources": list(rule.sources), "targets": described})
        return
    count = len(rule_set.rules)
    typer.echo(f"{path}: {count} rule{'s' if count != 1 else ''} OK")
    for rule in rule_set.rules:
        sources = ", ".join(rule.sources) or "all sources"
        targets = "; ".join(target.describe() for target in rule.targets)
        typer.echo(f"  {rule.name}: {sources} -> {targets}")


def route(
    rules: Annotated[Path | None, typer.Option("--rules", "-r", help="The rules file (YAML).")] = None,
    from_log: Annotated[
        bool,
        typer.Option("--rules-from-log", help="The rules stored in the log (managed through the gateway's /rules)."),
    ] = False,
    group: Annotated[str, typer.Option("--group", "-g", help="Consumer group of the router.")] = "inmotion-router",
    once: Annotated[bool, typer.Option("--once", help="Route and deliver what is there now, then exit.")] = False,
    session_timeout: Annotated[
        float, typer.Option(help="Seconds without a heartbeat before a router's partitions go to the others.")
    ] = DEFAULT_SESSION_TIMEOUT,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve the router's counters at http://127.0.0.1:PORT/metrics.")
    ] = None,
    broker: BrokerOption = None,
) -> None:
    """Route events from the rules' source topics to their targets, as a consumer group.

    Several `inmotion route` processes with the same --group share the partitions; one that
    dies loses them to the others within the session timeout. Handler and HTTP targets are
    delivered from a topic of their own (`<group>.<rule>.<n>`), each with its retries and its
    dead-letter topic (default `<group>.<rule>.<n>.dlq`, see `inmotion dlq`). The topics the
    rules name must exist. Editing the rules file reloads it (the router finishes what it
    holds and commits first); a file that fails to load keeps the old rules. With
    --rules-from-log the rules are those stored in the log (the gateway's /rules), reloaded
    when one is put or deleted. SIGTERM or Ctrl-C stop it once the events in hand are
    finished. --metrics-port serves its matches and deliveries per rule and target; they are
    also reported to the log every 5 s, for the gateway's /metrics.
    """
    if (rules is None) == (not from_log):
        fail("give exactly one of --rules FILE and --rules-from-log", EXIT_INVALID)
    if metrics_port is not None and not 0 < metrics_port < 65536:
        fail(f"--metrics-port must be between 1 and 65535, got {metrics_port}", EXIT_INVALID)
    with open_log(broker) as log:
        source = RuleStore(log) if rules is None else RulesFile(rules)
        running: list[App] = []  # the app the router runs on now (a new one after each reload)

        def on_app(app: App) -> None:
            running.append(app)
            app.task(reporter(app))  # its counters in the gateway's /metrics

        async def routing() -> RouteTotals:
            serving: asyncio.Task[None] | None = None
            if metrics_port is not None:
                from inmotion.gateway import serve_metrics  # only then: see inmotion.cli.gateway

                metrics = serve_metrics(lambda: running[-1].prometheus() if running else "", "127.0.0.1", metrics_port)
                serving = asyncio.create_task(metrics())
            try:
                return await route_rules(
                    log,
                    source,
                    group=group,
                    once=once,
                    session_timeout=session_timeout,
                    say=lambda line: typer.echo(line, err=True),
                    on_app=on_app,
                )
            finally:
                if serving is not None:
                    serving.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await serving

        try:
            totals = asyncio.run(routing())
        except InmotionError as error:
            fail(str(error), EXIT_INVALID if isinstance(error, InvalidConfig | InvalidPattern) else 1)
    typer.echo(f"routed {totals.routed} events, {totals.unmatched} matched no rule", err=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the command line."""
    app.add_typer(rules_app, name="rules")
    app.command("route", epilog=RULES_FILE_HELP)(route)
