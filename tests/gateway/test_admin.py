"""The admin API, /metrics, the OpenAPI and AsyncAPI documents, and `inmotion run --metrics-port`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import httpx

from inmotion.events import Event
from inmotion.gateway import Settings, create_app
from inmotion.log import connect
from inmotion.runtime import deadletter
from inmotion.testing import eventually, wait_until
from tests.gateway.conftest import Server, create_token, free_port
from tests.runtime.test_reports import parsed
from tests.test_asyncapi import valid
from tests.test_cli import INMOTION
from tests.workflows.test_cli_workflows import post_office
from tests.workflows.test_workflows import running, status


def admin(server: Server) -> httpx.Client:
    token = create_token(server.broker, "root", "--admin")
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_topics_create_list_describe_delete(server: Server) -> None:
    with admin(server) as client:
        created = client.post("/topics", json={"name": "payments", "partitions": 2, "retention_ms": 60000})
        assert created.status_code == 201, created.text
        assert created.json()["partitions"] == [
            {"partition": 0, "earliest": 0, "latest": 0},
            {"partition": 1, "earliest": 0, "latest": 0},
        ]
        assert client.post("/topics", json={"name": "payments"}).status_code == 409
        bad = client.post("/topics", json={"name": "x", "partitions": 0})
        assert bad.status_code == 400
        assert bad.headers["content-type"] == "application/problem+json"
        assert client.post("/topics", json={"name": "x", "shards": 2}).json()["detail"] == "unknown setting(s): shards"
        assert client.post("/topics", content=b"[1]").status_code == 400
        names = [topic["name"] for topic in client.get("/topics").json()["topics"]]
        assert {"orders", "shipments", "payments"} <= set(names)
        assert client.get("/topics/payments").json()["retention_ms"] == 60000
        assert client.delete("/topics/payments").status_code == 204
        assert client.get("/topics/payments").status_code == 404
        assert client.delete("/topics/payments").status_code == 404


def test_groups_show_lag_and_dead_letters_are_listed_and_redriven(server: Server, broker: str) -> None:
    with connect(broker) as log:
        placed = [Event.create("shop.order.placed", {"n": n}, source="/t", key="k") for n in range(5)]
        [first, *_] = log.append_events("orders", placed)
        log.commit("billing", "orders", {first.partition: 1})
        failed = log.read("orders", first.partition, 0, 1)[0]
        deadletter.ensure_topic(log, "billing.dlq")
        log.append("billing.dlq", [deadletter.dead_letter(failed, ValueError("card declined"), 3, "billing", 0.0)])
        before = sum(log.latest_offset("orders", p) for p in range(3))
    with admin(server) as client:
        [group] = client.get("/groups").json()["groups"]
        assert group["group"] == "billing"
        assert group["lag"] == 4
        described = client.get("/groups/billing").json()
        assert described["lag"] == 4
        assert {p["partition"]: p["committed"] for p in described["partitions"]}[first.partition] == 1
        assert client.get("/groups/nobody").status_code == 404
        [entry] = client.get("/dlq").json()["entries"]
        assert entry["error_type"] == "builtins.ValueError"
        assert entry["error_message"] == "card declined"
        assert "ValueError: card declined" in entry["error_traceback"]
        assert client.get("/dlq?topic=billing.dlq&limit=0").status_code == 400
        assert client.get("/dlq?topic=nope.dlq").status_code == 404
        redriven = client.post("/dlq/billing.dlq/redrive", json={"type": "shop.order.*"}).json()["redriven"]
        assert redriven == [{"id": entry["id"], "type": "shop.order.placed", "to": "orders"}]
        assert client.post("/dlq/billing.dlq/redrive", json={}).json()["redriven"] == []  # each entry once
        assert client.post("/dlq/billing.dlq/redrive", json={"ids": "x"}).status_code == 400
        text = client.get("/metrics").text
    with connect(broker) as log:
        assert sum(log.latest_offset("orders", p) for p in range(3)) == before + 1
    assert 'inmotion_dead_letters{topic="billing.dlq"} 1' in text
    assert (
        f'inmotion_group_lag{{group="billing",partition="{first.partition}",topic="orders"}} 5' in text
    )  # 4, and the redriven event
    assert "# TYPE inmotion_group_lag gauge" in text
    assert text.count("# TYPE inmotion_published_total") == 1


def test_the_pattern_tester_explains_its_answer(server: Server) -> None:
    with admin(server) as client:
        answer = client.post(
            "/rules/test",
            json={"pattern": {"data": {"total": [{"numeric": [">", 100]}]}}, "event": {"data": {"total": 250}}},
        )
        assert answer.json()["match"] is True
        assert answer.json()["explanation"]
        miss = client.post("/rules/test", json={"pattern": {"data": {"total": [5]}}, "event": {"data": {"total": 6}}})
        assert miss.json()["match"] is False
        invalid = client.post("/rules/test", json={"pattern": {"data": {"total": [{"numeric": [">"]}]}}, "event": {}})
        assert invalid.status_code == 400
        assert "invalid pattern" in invalid.json()["detail"]


def test_metrics_count_requests_and_published_events(server: Server, broker: str) -> None:
    token = create_token(broker, "shop", "--publish", "orders")
    for n in range(3):
        httpx.post(
            f"{server.url}/topics/orders/events",
            json={"specversion": "1.0", "id": f"m-{n}", "source": "/m", "type": "t"},
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/cloudevents+json"},
        )
    with admin(server) as client:
        text = client.get("/metrics").text
    assert 'inmotion_published_total{topic="orders"} 3' in text
    assert 'inmotion_http_requests_total{route="publish",status="202"} 3' in text
    samples = parsed(text)  # as Prometheus reads it: one family each, histogram buckets in order
    assert samples["inmotion_http_request_duration_seconds_count"][(("route", "publish"), ("status", "202"))] == 3
    assert (
        samples["inmotion_http_request_duration_seconds_bucket"][
            (("le", "+Inf"), ("route", "publish"), ("status", "202"))
        ]
        == 3
    )
    ends = [line for line in text.splitlines() if line.startswith('inmotion_topic_end_offset{partition="')]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in ends if 'topic="orders"' in line) == 3


def test_openapi_and_asyncapi_documents(server: Server, broker: str) -> None:
    with connect(broker) as log:
        log.append_events("orders", [Event.create("shop.order.placed", {"n": 1}, source="/t")])
    with admin(server) as client:
        openapi = client.get("/openapi.json").json()
        asyncapi = client.get("/asyncapi.json").json()
    assert openapi["openapi"] == "3.1.0"
    assert set(openapi["paths"]["/topics/{topic}/events"]) == {"get", "post"}
    assert "/dlq/{topic}/redrive" in openapi["paths"]
    assert openapi["paths"]["/topics/{topic}/events"]["post"]["responses"]["415"]
    valid(asyncapi)
    assert asyncapi["channels"]["orders"]["address"] == "orders"
    assert "shop.order.placed" in asyncapi["channels"]["orders"]["messages"]


def serves(port: int, line: str) -> bool:
    """Does http://127.0.0.1:PORT/metrics answer, with `line` among its series?"""
    try:
        return line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return False


APP = """
from inmotion import App

app = App("metered")


@app.subscribe("orders", group="metered")
async def handle(order: dict) -> None:
    pass
"""


def test_run_serves_an_apps_metrics(broker: str, tmp_path: Path) -> None:
    (tmp_path / "metered.py").write_text(APP)
    with connect(broker) as log:
        log.append_events("orders", [Event.create("t", {"n": n}, source="/t") for n in range(4)])
    port = free_port()
    env = {**os.environ, "INMOTION_BROKER": broker}
    process = subprocess.Popen(
        [INMOTION, "run", "metered:app", "--metrics-port", str(port)], cwd=tmp_path, env=env, stderr=subprocess.PIPE
    )
    try:
        line = 'inmotion_consumed_total{group="metered",topic="orders"} 4'
        wait_until(lambda: serves(port, line), 30, "the metrics to count the events")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken_port = busy.getsockname()[1]
        taken = subprocess.run(
            [INMOTION, "run", "metered:app", "--metrics-port", str(taken_port)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert taken.returncode == 1
    assert taken.stderr.startswith(f"error: cannot listen on 127.0.0.1:{taken_port}: ")


def test_workflows_are_listed_described_cancelled_and_retried_over_http(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path / 'log.db'}"
    broken = True

    async def check_address(address: str) -> str:
        if broken:
            raise ValueError(f"no such street: {address}")
        return address.upper()

    async def scenario() -> None:
        nonlocal broken
        gateway = create_app(broker, Settings(auth=False))
        transport = httpx.ASGITransport(app=gateway)
        with post_office(broker, check_address) as app:
            async with running(app), httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                await app.start_workflow("approval", {"amount": 5}, id="a1")
                await app.start_workflow("delivery", "elm street", id="b1")
                await eventually(
                    lambda: status(app, "approval/a1") == "waiting" and status(app, "delivery/b1") == "failed"
                )
                listed = (await client.get("/workflows")).json()["instances"]
                assert [(i["key"], i["status"]) for i in listed] == [
                    ("approval/a1", "waiting"),
                    ("delivery/b1", "failed"),
                ]
                waiting = (await client.get("/workflows?status=waiting")).json()["instances"]
                assert [i["key"] for i in waiting] == ["approval/a1"]
                assert (await client.get("/workflows?status=asleep")).status_code == 400
                described = (await client.get("/workflows/b1")).json()
                assert described["input"] == "elm street"
                assert described["history"][1]["kind"] == "step_failed"
                assert "no such street" in described["history"][1]["error"]
                assert (await client.get("/workflows/approval/nobody")).status_code == 404
                refused = await client.post("/workflows/delivery/b1", json={"request": "cancel"})
                assert refused.status_code == 409
                assert "only running, sleeping, waiting, compensating instances can be cancelled" in refused.text
                assert (await client.post("/workflows/b1", json={"request": "pause"})).status_code == 400
                cancelled = await client.post("/workflows/a1", json={"request": "cancel"})
                assert cancelled.status_code == 202
                await eventually(lambda: status(app, "approval/a1") == "failed")
                broken = False
                assert (await client.post("/workflows/delivery/b1", json={"request": "retry"})).status_code == 202
                await eventually(lambda: status(app, "delivery/b1") == "completed")
                done = (await client.get("/workflows/delivery/b1")).json()
                assert done["result"] == "ELM STREET"

    asyncio.run(scenario())


def test_a_group_replays_a_topic_over_http(server: Server, broker: str) -> None:
    with connect(broker) as log:
        log.append_events("orders", [Event.create("t", {"n": n}, source="/r", key="k") for n in range(5)])
        [partition] = [p for p in range(3) if log.latest_offset("orders", p)]
        log.commit("billing", "orders", {partition: 5})
    with admin(server) as client:
        moved = client.post("/groups/billing/replay", json={"topic": "orders", "offset": 2}).json()["partitions"]
        assert {m["partition"]: (m["from"], m["to"], m["events"]) for m in moved}[partition] == (5, 2, 3)
        assert client.post("/groups/billing/replay", json={"topic": "orders"}).status_code == 400
        assert client.post("/groups/billing/replay", json={"topic": "nope", "from_beginning": True}).status_code == 404
        bad_time = client.post("/groups/billing/replay", json={"topic": "orders", "since": "yesterday"})
        assert bad_time.status_code == 400
        everything = client.post(
            "/groups/billing/replay",
            json={"topic": "orders", "since": "2020-01-01T00:00:00Z", "partitions": [partition]},
        )
        assert everything.json()["partitions"][0]["to"] == 0
    with connect(broker) as log:
        assert log.committed("billing", "orders")[partition] == 0


def test_rules_put_through_the_api_are_followed_by_a_router_of_the_logs_rules(server: Server, broker: str) -> None:
    """A push subscription: a rule with an HTTP target PUT through the admin API; `inmotion
    route --rules-from-log` delivers to it, reloads when the rule changes, stops when it goes."""
    from tests.routing.test_router import Endpoint

    hook = Endpoint()
    router: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None
    try:
        with admin(server) as client:
            rule = {"sources": ["orders"], "pattern": {"type": ["shop.order.placed"]}, "targets": [{"http": hook.url}]}
            put = client.put("/rules/push-orders", json=rule)
            assert put.status_code == 200, put.text
            assert put.json()["targets"] == [f"POST {hook.url} (binary)"]
            assert (
                client.put("/rules/bad", json={**rule, "pattern": {"total": [{"numeric": [">"]}]}}).status_code == 400
            )
            handler = client.put("/rules/evil", json={**rule, "targets": [{"handler": "os:system"}]})
            assert handler.status_code == 400
            assert "topic and http targets only" in handler.json()["detail"]
            assert client.put("/rules/elsewhere", json={**rule, "sources": ["nope"]}).status_code == 404
            assert [r["name"] for r in client.get("/rules").json()["rules"]] == ["push-orders"]

            env = {**os.environ, "INMOTION_BROKER": broker}
            router = subprocess.Popen(
                [INMOTION, "route", "--rules-from-log", "--group", "pushes"], env=env, stderr=subprocess.PIPE, text=True
            )
            said: list[str] = []
            stream = router.stderr
            assert stream is not None
            reader = threading.Thread(target=lambda: said.extend(stream), daemon=True)
            reader.start()
            with connect(broker) as log:
                log.append_events("orders", [Event.create("shop.order.placed", {"n": 1}, source="/t")])
                wait_until(lambda: len(hook.requests) == 1, 30, "the first push")
                changed = client.put("/rules/push-orders", json={**rule, "pattern": {"type": ["shop.order.paid"]}})
                assert changed.status_code == 200
                wait_until(lambda: any("reloaded log:inmotion.rules" in line for line in said), 30, "a reload")
                log.append_events("orders", [Event.create("shop.order.paid", {"n": 2}, source="/t")])
                wait_until(lambda: len(hook.requests) == 2, 30, "the push of the changed rule")
                assert client.delete("/rules/push-orders").status_code == 204
                assert client.delete("/rules/push-orders").status_code == 404
                assert client.get("/rules").json()["rules"] == []
        assert [json.loads(body)["n"] for _, body in hook.requests] == [1, 2]
    finally:
        hook.close()
        if router is not None:
            router.terminate()
            router.wait(30)
            if reader is not None:
                reader.join(10)  # it reads to the end of the router's stderr
            assert router.stderr is not None
            router.stderr.close()


def test_a_router_serves_its_matches_and_deliveries_and_reports_them_to_the_gateway(
    server: Server, broker: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - {name: copy, sources: [orders], pattern: {type: [t]}, targets: [{topic: shipments}]}\n"
    )
    with connect(broker) as log:
        log.append_events("orders", [Event.create("t", {"n": n}, source="/t") for n in range(3)])
    port = free_port()
    env = {**os.environ, "INMOTION_BROKER": broker}
    router = subprocess.Popen(
        [INMOTION, "route", "--rules", str(rules), "--metrics-port", str(port)], env=env, stderr=subprocess.DEVNULL
    )
    try:
        line = 'inmotion_router_matched_total{group="inmotion-router",rule="copy"} 3'
        wait_until(lambda: serves(port, line), 30, "the router's metrics to count the matches")
        instance = f"inmotion-router@{socket.gethostname()}:{router.pid}"
        client = admin(server)

        def reported() -> bool:
            samples = parsed(client.get("/metrics").text)
            matched = samples.get("inmotion_router_matched_total", {})
            return matched.get((("group", "inmotion-router"), ("instance", instance), ("rule", "copy"))) == 3

        with client:
            wait_until(reported, 30, "the gateway's /metrics to show the router's report")
    finally:
        router.terminate()
        router.wait(30)
