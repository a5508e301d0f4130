"""The gateway as a client in any language meets it: `inmotion serve` on 127.0.0.1, events
POSTed with curl and read back as Server-Sent Events, every bad request refused with a
problem body and nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import httpx
import pytest

from inmotion.events import Event
from inmotion.log import TopicConfig, connect
from inmotion.testing import wait_until
from tests.gateway.conftest import Server, create_token, free_port, inmotion, read_frames

BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "o-1",
    "ce-source": "/checkout",
    "ce-type": "shop.order.placed",
    "ce-partitionkey": "customer-7",
    "Content-Type": "application/json",
}


def structured(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"e-{n}",
        "source": "/test",
        "type": "shop.order.placed",
        "data": {"n": n},
        **extra,
    }


def offsets(broker: str, topic: str = "orders") -> list[int]:
    with connect(broker) as log:
        return [log.latest_offset(topic, p) for p in range(log.partition_count(topic))]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_publishes_in_binary_mode_and_a_group_reads_it_back_over_sse(server: Server, broker: str) -> None:
    token = create_token(broker, "shop", "--publish", "orders", "--subscribe", "orders")
    headers = [arg for name, value in BINARY.items() for arg in ("-H", f"{name}: {value}")]
    posted = subprocess.run(
        ["curl", "-s", "-X", "POST", f"{server.url}/topics/orders/events", "-H", f"Authorization: Bearer {token}",
         *headers, "-d", '{"total": 42.5, "note": "caf\u00e9"}'],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    answer = json.loads(posted.stdout)
    [placed] = answer["events"]
    assert placed["id"] == "o-1"
    assert placed["duplicate"] is False
    [frame] = read_frames(f"{server.url}/topics/orders/events?group=billing", 1, token=token)
    assert frame.event == "shop.order.placed"
    assert frame.data["data"] == {"total": 42.5, "note": "caf\u00e9"}
    assert frame.data["partitionkey"] == "customer-7"
    assert (frame.data["partition"], frame.data["offset"]) == (placed["partition"], placed["offset"])
    assert frame.id == f"{placed['partition']}:{placed['offset'] + 1}"
    with connect(broker) as log:
        [record] = log.read("orders", placed["partition"], placed["offset"], 1)
        assert record.event().source == "/checkout"


def test_structured_and_batch_modes_and_a_retried_post_is_not_appended_twice(server: Server, broker: str) -> None:
    token = create_token(broker, "shop", "--publish", "orders")
    one = httpx.post(
        f"{server.url}/topics/orders/events",
        content=json.dumps(structured(1)),
        headers={**bearer(token), "Content-Type": "application/cloudevents+json; charset=utf-8"},
    )
    assert one.status_code == 202, one.text
    batch = httpx.post(
        f"{server.url}/topics/orders/events",
        content=json.dumps([structured(2), structured(1), structured(3), structured(3)]),
        headers={**bearer(token), "Content-Type": "application/cloudevents-batch+json"},
    )
    assert batch.status_code == 202, batch.text
    assert [e["duplicate"] for e in batch.json()["events"]] == [False, True, False, True]
    assert sum(offsets(broker)) == 3
    # the same id from another source is another event
    other = httpx.post(
        f"{server.url}/topics/orders/events",
        content=json.dumps(structured(1, source="/elsewhere")),
        headers={**bearer(token), "Content-Type": "application/cloudevents+json"},
    )
    assert other.json()["events"][0]["duplicate"] is False
    assert sum(offsets(broker)) == 4


BAD_REQUESTS: list[tuple[str, dict[str, str], bytes, int, str | None]] = [
    ("malformed JSON", {"Content-Type": "application/cloudevents+json"}, b'{"specversion": "1.0",', 400, "<json>"),
    ("no type", {"Content-Type": "application/cloudevents+json"},
     json.dumps({"specversion": "1.0", "id": "x", "source": "/s"}).encode(), 400, "type"),
    ("bad time", {"Content-Type": "application/cloudevents+json"},
     json.dumps({**structured(1), "time": "yesterday"}).encode(), 400, "time"),
    ("one bad event in a batch", {"Content-Type": "application/cloudevents-batch+json"},
     json.dumps([structured(1), structured(2), {"specversion": "1.0", "id": "x"}]).encode(), 400, "source"),
    ("a batch that is no array", {"Content-Type": "application/cloudevents-batch+json"}, b"{}", 400, "<batch>"),
    ("an empty batch", {"Content-Type": "application/cloudevents-batch+json"}, b"[]", 400, None),
    ("wrong content type", {"Content-Type": "text/plain"}, b"hello", 415, None),
    ("binary mode without ce-type", {k: v for k, v in BINARY.items() if k != "ce-type"}, b"{}", 400, "type"),
    ("binary mode, another specversion", {**BINARY, "ce-specversion": "0.3"}, b"{}", 400, "specversion"),
    ("binary mode, malformed JSON data", BINARY, b"{oops", 400, "data"),
    ("binary mode, a header not UTF-8", {**BINARY, "ce-subject": "%FF"}, b"{}", 400, "subject"),
    ("too large", {"Content-Type": "application/cloudevents+json"},
     json.dumps(structured(1, data="x" * 2_000_000)).encode(), 413, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "body", "status", "attribute"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_a_bad_event_gets_a_problem_naming_it_and_writes_nothing(
    server: Server, broker: str, headers: dict[str, str], body: bytes, status: int, attribute: str | None
) -> None:
    token = create_token(broker, "shop", "--publish", "orders")
    answer = httpx.post(f"{server.url}/topics/orders/events", content=body, headers={**bearer(token), **headers})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == status
    assert problem["instance"] == "/topics/orders/events"
    assert problem["detail"]
    assert problem.get("attribute") == attribute
    one_of_a_batch = headers.get("Content-Type") == "application/cloudevents-batch+json" and attribute == "source"
    assert problem.get("index") == (2 if one_of_a_batch else None)  # the bad event's place in the batch
    assert offsets(broker) == [0, 0, 0]


def test_tokens_missing_wrong_revoked_or_for_another_topic_are_refused(server: Server, broker: str) -> None:
    token = create_token(broker, "shop", "--publish", "orders.*", "--subscribe", "shipments")
    post = f"{server.url}/topics/orders/events"
    body = json.dumps(structured(1))
    kind = {"Content-Type": "application/cloudevents+json"}

    def status(url: str, headers: dict[str, str], method: str = "POST") -> tuple[int, str]:
        answer = httpx.request(method, url, content=body if method == "POST" else None, headers={**kind, **headers})
        assert answer.headers["content-type"] == "application/problem+json"
        return answer.status_code, answer.json()["detail"]

    assert status(post, {}) == (401, "this request needs a token: send 'Authorization: Bearer <token>'")
    assert status(post, {"Authorization": "Basic dXNlcjpwdw=="})[0] == 401
    assert status(post, bearer("imt_not-a-token")) == (401, "unknown or revoked token")
    assert status(post, bearer(token)) == (403, "token 'shop' may not publish to topic 'orders'")
    assert status(f"{server.url}/topics/orders/events", bearer(token), "GET")[0] == 403
    assert status(f"{server.url}/topics", bearer(token), "GET")[0] == 403  # the admin API
    assert (
        httpx.post(f"{server.url}/topics/orders.eu/events", content=body, headers={**kind, **bearer(token)}).status_code
        == 404
    )
    revoked = inmotion(broker, "tokens", "revoke", "shop")
    assert revoked.returncode == 0, revoked.stderr
    shipments = f"{server.url}/topics/shipments/events"
    wait_until(lambda: status(shipments, bearer(token))[0] == 401, 10, "the revoked token to be refused")
    assert offsets(broker) == [0, 0, 0]
    assert offsets(broker, "shipments") == [0]


def test_a_token_over_its_rate_gets_429_with_retry_after(server: Server, broker: str) -> None:
    token = create_token(broker, "slow", "--publish", "orders", "--rate", "2")
    answers = [
        httpx.post(
            f"{server.url}/topics/orders/events",
            content=json.dumps(structured(n)),
            headers={**bearer(token), "Content-Type": "application/cloudevents+json"},
        )
        for n in range(8)
    ]
    codes = [answer.status_code for answer in answers]
    assert codes[:4] == [202] * 4  # a burst of twice the rate
    assert 429 in codes
    limited = next(answer for answer in answers if answer.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert sum(offsets(broker)) == codes.count(202)


def test_tokens_are_stored_as_hashes_and_printed_once(broker: str, tmp_path: Any) -> None:
    created = inmotion(broker, "tokens", "create", "ci", "--publish", "orders", "--json")
    document = json.loads(created.stdout)
    assert document["token"].startswith("imt_")
    assert document["token"].encode() not in (tmp_path / "gateway.db").read_bytes()
    listed = inmotion(broker, "tokens", "list", "--json")
    assert json.loads(listed.stdout) == {k: v for k, v in document.items() if k != "token"}
    again = inmotion(broker, "tokens", "create", "ci", "--admin")
    assert again.returncode == 1
    assert again.stderr == "error: token 'ci' exists (revoke it first: inmotion tokens revoke ci)\n"
    nothing = inmotion(broker, "tokens", "create", "idle")
    assert nothing.returncode == 1
    assert "would allow nothing" in nothing.stderr
    unknown = inmotion(broker, "tokens", "revoke", "nobody")
    assert unknown.returncode == 1
    assert "no token named 'nobody'" in unknown.stderr


def test_no_auth_only_on_a_loopback_address(broker: str) -> None:
    refused = inmotion(broker, "serve", "--insecure-no-auth", "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: --insecure-no-auth serves only on a loopback address (127.0.0.1), not on 0.0.0.0"
    )
    server = Server(broker, free_port(), ("--insecure-no-auth",)).start()
    try:
        answer = httpx.post(
            f"{server.url}/topics/orders/events",
            content=json.dumps(structured(1)),
            headers={"Content-Type": "application/cloudevents+json"},
        )
        assert answer.status_code == 202
    finally:
        server.stop()


def test_a_port_in_use_is_one_clear_error(server: Server, broker: str) -> None:
    taken = inmotion(broker, "serve", "--port", str(server.port))
    assert taken.returncode == 1
    assert taken.stderr.startswith(f"error: cannot listen on 127.0.0.1:{server.port}: ")


def test_the_served_process_collects_garbage_less_often() -> None:
    """`inmotion serve` freezes what the ready server holds and collects the young generation
    after 5,000 objects (the objects of requests in flight set off a collection every few
    dozen requests at Python's default of 700)."""
    code = (
        "import gc; from inmotion.gateway.server import collect_less; collect_less();"
        " print(gc.get_threshold()[0], gc.get_freeze_count() > 1000)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["5000", "True"]


def test_a_compacted_topic_reads_as_a_table(server: Server, broker: str) -> None:
    with connect(broker) as log:
        log.create_topic("profiles", TopicConfig(partitions=2, compact=True))
        log.append_events("profiles", [Event.create("p", {"v": 1}, source="/s", key="ada")])
        log.append_events("profiles", [Event.create("p", {"v": 2}, source="/s", key="ada")])
        log.append_events("profiles", [Event.create("p", {"v": 1}, source="/s", key="alan")])
        log.append_events("profiles", [Event.create("p", None, source="/s", key="alan")])  # a tombstone
        log.append_events("profiles", [Event.create("p", {"keyless": True}, source="/s")])
    reader = create_token(broker, "reader", "--subscribe", "profiles")
    answer = httpx.get(f"{server.url}/topics/profiles/table", headers=bearer(reader))
    assert answer.status_code == 200, answer.text
    rows = answer.json()["rows"]
    assert list(rows) == ["ada"]
    assert rows["ada"]["data"] == {"v": 2}
    writer = create_token(broker, "writer", "--publish", "profiles")
    assert httpx.get(f"{server.url}/topics/profiles/table", headers=bearer(writer)).status_code == 403
    assert httpx.get(f"{server.url}/topics/nope/table", headers=bearer(reader)).status_code in (403, 404)


def test_two_gateways_on_one_sqlite_file_share_tokens_dedupe_records_and_groups(broker: str) -> None:
    first, second = Server(broker, free_port()).start(), Server(broker, free_port()).start()
    try:
        token = create_token(broker, "shared", "--publish", "orders", "--subscribe", "orders")
        kind = {"Content-Type": "application/cloudevents+json"}
        sent = httpx.post(
            f"{first.url}/topics/orders/events", content=json.dumps(structured(1)), headers={**kind, **bearer(token)}
        )
        assert sent.json()["events"][0]["duplicate"] is False
        again = httpx.post(
            f"{second.url}/topics/orders/events", content=json.dumps(structured(1)), headers={**kind, **bearer(token)}
        )
        assert again.json()["events"][0]["duplicate"] is True  # the first one's dedupe record, in the file
        [frame] = read_frames(f"{second.url}/topics/orders/events?group=both", 1, token=token)
        assert frame.data["id"] == "e-1"
        inmotion(broker, "tokens", "revoke", "shared")

        def refused_by_both() -> bool:
            return all(httpx.get(f"{g.url}/topics", headers=bearer(token)).status_code == 401 for g in (first, second))

        wait_until(refused_by_both, 10, "every gateway to refuse the revoked token")
        assert sum(offsets(broker)) == 1
    finally:
        first.stop()
        second.stop()
