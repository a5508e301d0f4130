"""One trace across the gateway, the router and three services, seen by OpenTelemetry's
in-memory exporter; the structured logs of a failing handler carry event, correlation and
trace ids. (In a process of its own: OpenTelemetry's tracer provider is set once a process.)"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

FLOW = r"""
import asyncio, json, logging, sys
import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from inmotion import App, Context
from inmotion.gateway import Settings, create_app
from inmotion.log import TopicConfig, connect
from inmotion.routing import Router
from inmotion.routing.rules import Rule, TopicTarget
from inmotion.patterns import Pattern

url = sys.argv[1]
with connect(url) as log:
    for topic in ("signups", "accounts", "welcomes", "audits", "mistakes"):
        log.create_topic(topic, TopicConfig(partitions=2))

done = asyncio.Event()
app = App("shop", url)
Router(app, [Rule(name="new-users", pattern=Pattern({"type": ["user.signed_up"]}), sources=("signups",),
                  targets=(TopicTarget(topic="accounts"),))], group="router")

@app.subscribe("accounts", group="accounts")
async def open_account(user: dict, ctx: Context) -> None:
    await ctx.publish("welcomes", user, type="user.account_opened")

@app.subscribe("welcomes", group="mailer")
async def welcome(user: dict, ctx: Context) -> None:
    await ctx.publish("audits", user, type="user.welcomed")

@app.subscribe("audits", group="audit")
async def audit(user: dict) -> None:
    done.set()

@app.subscribe("mistakes", group="fragile", dead_letter=True)
async def fail(anything: dict) -> None:
    raise ValueError("always")

async def main() -> None:
    tracer = trace.get_tracer("client")
    gateway = create_app(url, Settings(auth=False))
    running = asyncio.create_task(app.run(until=done))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway") as client:
        with tracer.start_as_current_span("client signs up") as span:
            headers = {}
            TraceContextTextMapPropagator().inject(headers)
            answer = await client.post("/topics/signups/events", json={"specversion": "1.0", "id": "u-1",
                "source": "/web", "type": "user.signed_up", "data": {"user": "ada"}},
                headers={**headers, "Content-Type": "application/cloudevents+json"})
            assert answer.status_code == 202, answer.text
            client_trace = format(span.get_span_context().trace_id, "032x")
        await client.post("/topics/mistakes/events", json={"specversion": "1.0", "id": "m-1",
            "source": "/web", "type": "oops", "data": {}},
            headers={"Content-Type": "application/cloudevents+json", "traceparent": headers["traceparent"]})
        await asyncio.wait_for(running, 30)
    spans = [{"name": s.name, "trace": format(s.context.trace_id, "032x"), "span": format(s.context.span_id, "016x"),
              "parent": None if s.parent is None else format(s.parent.span_id, "016x"), "kind": s.kind.name}
             for s in exporter.get_finished_spans()]
    print(json.dumps({"client_trace": client_trace, "spans": spans}))

asyncio.run(main())
"""


def test_ingress_router_and_three_handlers_form_one_trace(tmp_path: Path) -> None:
    script = tmp_path / "flow.py"
    script.write_text(FLOW)
    done = subprocess.run(
        [sys.executable, str(script), f"sqlite:///{tmp_path / 'traced.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    spans = result["spans"]
    by_name = {span["name"]: span for span in spans if span["name"] != "process mistakes"}
    chain = [
        "client signs up",
        "POST /topics/signups/events",
        "process signups",  # the router
        "process accounts",
        "process welcomes",
        "process audits",
    ]
    assert set(chain) <= set(by_name), sorted(by_name)
    assert {by_name[name]["trace"] for name in chain} == {result["client_trace"]}, "one trace"
    for parent, child in itertools.pairwise(chain):
        if child == "process accounts":  # the router forwards the event as it is: its parent is the ingress
            assert by_name[child]["parent"] == by_name["POST /topics/signups/events"]["span"]
        else:
            assert by_name[child]["parent"] == by_name[parent]["span"], f"{child} under {parent}"
    assert by_name["POST /topics/signups/events"]["kind"] == "SERVER"
    assert by_name["process welcomes"]["kind"] == "CONSUMER"


FAILING = r"""
import asyncio, sys
from inmotion import App
from inmotion.events import Event
from inmotion.log import TopicConfig, connect
from inmotion.runtime import logs
from inmotion import Retry

logs.configure("info", json_lines=True)
url = sys.argv[1]
with connect(url) as log:
    log.create_topic("mistakes", TopicConfig(partitions=1))
app = App("shop", url)
dead = asyncio.Event()

@app.subscribe("mistakes", group="fragile", retry=Retry(attempts=1, backoff=0))
async def fail(anything: dict) -> None:
    raise ValueError("always")

async def main() -> None:
    event = Event.create("oops", {}, source="/web", extensions={
        "correlationid": "flow-7", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    await app.publish("mistakes", event)
    running = asyncio.create_task(app.run())
    with connect(url) as log:
        while "fragile.dlq" not in log.list_topics() or not log.latest_offset("fragile.dlq", 0):
            await asyncio.sleep(0.05)
    running.cancel()

asyncio.run(main())
"""


def test_structured_logs_of_a_failure_carry_event_correlation_and_trace_ids(tmp_path: Path) -> None:
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    done = subprocess.run(
        [sys.executable, str(script), f"sqlite:///{tmp_path / 'logs.db'}"], capture_output=True, text=True, timeout=60
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    failures = [line for line in lines if "handler failed" in line["message"] or "dead-lettered" in line["message"]]
    assert failures, done.stderr
    for line in failures:
        assert line["correlation_id"] == "flow-7"
        assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert line["event_id"]
