"""Server-Sent Events out of the gateway: a group's clients split its partitions, resume with
Last-Event-ID after a disconnect or a kill -9 of the gateway, and commit only what they
acknowledge."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from inmotion.log import connect
from inmotion.testing import wait_until
from tests.gateway.conftest import Frame, Server, create_token, read_frames


def publish(server: Server, token: str, count: int, start: int = 0, topic: str = "orders") -> None:
    batch = [
        {"specversion": "1.0", "id": f"e-{n}", "source": "/test", "type": "t", "partitionkey": f"k{n}", "data": n}
        for n in range(start, start + count)
    ]
    answer = httpx.post(
        f"{server.url}/topics/{topic}/events",
        content=json.dumps(batch),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/cloudevents-batch+json"},
    )
    assert answer.status_code == 202, answer.text


def numbers(frames: list[Frame]) -> list[int]:
    return [frame.data["data"] for frame in frames]


def test_last_event_id_resumes_after_the_last_event_seen_and_commits_up_to_it(server: Server, broker: str) -> None:
    token = create_token(broker, "app", "--publish", "orders", "--subscribe", "orders")
    publish(server, token, 30)
    url = f"{server.url}/topics/orders/events?group=mailer"
    first = read_frames(url, 10, token=token)
    with connect(broker) as log:
        assert log.committed("mailer", "orders") == {}  # sent is not acknowledged
    rest = read_frames(url, 20, token=token, last_id=first[-1].id)
    assert sorted(numbers(first + rest)) == list(range(30))
    with connect(broker) as log:
        committed = log.committed("mailer", "orders")
    assert committed == {int(p): int(o) for p, o in (pair.split(":") for pair in first[-1].id.split(","))}
    # the ack endpoint commits while connected; a new client of the group starts there
    ack = httpx.post(
        f"{server.url}/topics/orders/groups/mailer/ack",
        json={"last_event_id": rest[-1].id},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert ack.status_code == 204, ack.text
    publish(server, token, 1, start=30)
    [new] = read_frames(url, 1, token=token)
    assert new.data["data"] == 30


def test_without_a_group_a_stream_starts_at_the_end_or_the_beginning(server: Server, broker: str) -> None:
    token = create_token(broker, "app", "--publish", "orders", "--subscribe", "orders")
    publish(server, token, 3)
    assert sorted(numbers(read_frames(f"{server.url}/topics/orders/events?from=earliest", 3, token=token))) == [0, 1, 2]
    frames: list[Frame] = []
    reader = threading.Thread(
        target=lambda: frames.extend(read_frames(f"{server.url}/topics/orders/events", 1, token=token))
    )
    reader.start()
    wait_until(lambda: _streams(server) >= 1, 10, "the stream to open")
    publish(server, token, 1, start=3)
    reader.join(20)
    assert numbers(frames) == [3]
    with connect(broker) as log:
        assert log.list_groups() == []  # no group: nothing committed anywhere


def _streams(server: Server) -> int:
    """How many SSE streams the gateway has answered (from its metrics)."""
    admin_token = getattr(server, "admin_token", None)
    if admin_token is None:
        admin_token = server.admin_token = create_token(server.broker, "metrics-reader", "--admin")  # type: ignore[attr-defined]
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {admin_token}"}).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith('inmotion_http_requests_total{route="subscribe",status="200"}')
    )


def test_bad_stream_requests(server: Server, broker: str) -> None:
    token = create_token(broker, "app", "--subscribe", "orders")
    headers = {"Authorization": f"Bearer {token}"}
    bad_id = httpx.get(f"{server.url}/topics/orders/events", headers={**headers, "Last-Event-ID": "nonsense"})
    assert bad_id.status_code == 400
    assert "invalid Last-Event-ID 'nonsense'" in bad_id.json()["detail"]
    no_partition = httpx.get(f"{server.url}/topics/orders/events", headers={**headers, "Last-Event-ID": "7:1"})
    assert no_partition.status_code == 400
    assert httpx.get(f"{server.url}/topics/orders/events?from=middle", headers=headers).status_code == 400
    other = create_token(broker, "other", "--subscribe", "nope")
    missing = httpx.get(f"{server.url}/topics/nope/events", headers={"Authorization": f"Bearer {other}"})
    assert missing.status_code == 404
    empty_ack = httpx.post(f"{server.url}/topics/orders/groups/g/ack", json={}, headers=headers)
    assert empty_ack.status_code == 400


def test_two_clients_of_one_group_split_its_partitions(server: Server, broker: str) -> None:
    token = create_token(broker, "app", "--publish", "orders", "--subscribe", "orders")
    url = f"{server.url}/topics/orders/events?group=split"
    results: list[list[int]] = [[], []]
    stop = threading.Event()

    def client(index: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream("GET", url, headers=headers, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    results[index].append(json.loads(line[6:])["data"])
                if stop.is_set():
                    return

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    with connect(broker) as log:
        coordinator = log.group_coordinator()
        try:
            wait_until(
                lambda: len(set(coordinator.owners("split").values())) == 2, 30, "both clients to own partitions"
            )
            publish(server, token, 60)
            wait_until(lambda: sorted(results[0] + results[1]) == list(range(60)), 30, "every event, once")
            stop.set()
            publish(server, token, 30, start=60)  # wakes the readers (on every partition) so that they notice `stop`
            for thread in threads:
                thread.join(10)
            assert results[0], "the first client got events"
            assert results[1], "the second client got events"
            wait_until(lambda: coordinator.members("split") == [], 20, "both members to leave with their clients")
        finally:
            coordinator.close()


@pytest.mark.slow
def test_kill_9_of_the_gateway_mid_stream_loses_nothing_acknowledged(broker: str, tmp_path: Path) -> None:
    """A client reads, remembering the last id; the gateway dies (kill -9) and starts again;
    the client reconnects with Last-Event-ID: every event arrives, none it saw before again."""
    from tests.gateway.conftest import free_port

    server = Server(broker, free_port()).start()
    token = create_token(broker, "app", "--publish", "orders", "--subscribe", "orders")
    try:
        publish(server, token, 500)
        url = f"{server.url}/topics/orders/events?group=durable"
        seen: list[Frame] = []
        try:
            with httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as response:
                data, last = None, ""
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                    elif line.startswith("id: "):
                        last = line[4:]
                    elif not line and data is not None:
                        seen.append(Frame(last, data["type"], data))
                        data = None
                        if len(seen) == 200:
                            server.kill()
        except httpx.TransportError:
            pass  # the gateway died under the stream
        assert 200 <= len(seen) < 500
        server = Server(broker, server.port).start()
        publish(server, token, 100, start=500)
        rest = read_frames(url, 600 - len(seen), token=token, last_id=seen[-1].id)
        got = numbers(seen) + numbers(rest)
        assert sorted(got) == list(range(600)), "every event once, none lost, none repeated"
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_node_publishes_over_http_and_reads_over_sse(server: Server, broker: str, tmp_path: Path) -> None:
    token = create_token(broker, "node", "--publish", "orders", "--subscribe", "orders")
    script = tmp_path / "client.mjs"
    script.write_text(NODE_CLIENT)
    done = subprocess.run(["node", str(script), server.url, token], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "published 3"
    assert sorted(json.loads(line)["data"]["n"] for line in lines[1:]) == [1, 2, 3]


NODE_CLIENT = r"""
const [base, token] = process.argv.slice(2);
const auth = { Authorization: `Bearer ${token}` };
let published = 0;
for (const n of [1, 2, 3]) {
  const answer = await fetch(`${base}/topics/orders/events`, {
    method: "POST",
    headers: { ...auth, "ce-specversion": "1.0", "ce-id": `node-${n}`, "ce-source": "/node",
               "ce-type": "signup.created", "content-type": "application/json" },
    body: JSON.stringify({ n }),
  });
  if (answer.status !== 202) throw new Error(`HTTP ${answer.status}: ${await answer.text()}`);
  published += 1;
}
console.log(`published ${published}`);
const stream = await fetch(`${base}/topics/orders/events?group=node`, { headers: auth });
const reader = stream.body.pipeThrough(new TextDecoderStream()).getReader();
let buffer = "", received = 0;
while (received < 3) {
  const { value, done } = await reader.read();
  if (done) throw new Error("the stream ended");
  buffer += value;
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    const frame = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    const data = frame.split("\n").find((line) => line.startsWith("data: "));
    if (data) { console.log(data.slice(6)); received += 1; }
  }
}
await reader.cancel();
"""


@pytest.mark.kafka
def test_the_gateway_on_kafka_publishes_dedupes_and_streams_to_a_group(kafka_bootstrap: str) -> None:
    import uuid

    from inmotion.log import TopicConfig
    from tests.gateway.conftest import free_port

    broker = f"kafka://{kafka_bootstrap}"
    topic = f"gateway-{uuid.uuid4().hex[:8]}"
    with connect(broker) as log:
        log.create_topic(topic, TopicConfig(partitions=2))
    token = create_token(broker, f"kafka-{topic}", "--publish", topic, "--subscribe", topic)
    server = Server(broker, free_port()).start()
    try:
        publish(server, token, 20, topic=topic)
        publish(server, token, 5, topic=topic)  # the same ids again: not appended twice
        with connect(broker) as log:
            assert sum(log.latest_offset(topic, p) for p in range(2)) == 20
        url = f"{server.url}/topics/{topic}/events?group=g-{topic}"
        first = read_frames(url, 8, token=token, timeout=60)
        rest = read_frames(url, 12, token=token, last_id=first[-1].id, timeout=60)
        assert sorted(numbers(first + rest)) == list(range(20))
        with connect(broker) as log:
            committed = log.committed(f"g-{topic}", topic)
        assert committed == {int(p): int(o) for p, o in (pair.split(":") for pair in first[-1].id.split(","))}
    finally:
        server.stop()


def test_a_websocket_streams_a_group_and_commits_what_the_client_acknowledges(server: Server, broker: str) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect as websocket

    token = create_token(broker, "app", "--publish", "orders", "--subscribe", "orders")
    publish(server, token, 10)
    url = f"ws://127.0.0.1:{server.port}/topics/orders/ws?group=sockets"
    headers = {"Authorization": f"Bearer {token}"}
    seen: list[dict[str, Any]] = []
    with websocket(url, additional_headers=headers, proxy=None) as socket:
        while len(seen) < 4:
            seen.append(json.loads(socket.recv(timeout=20)))
        socket.send(json.dumps({"ack": seen[-1]["cursor"]}))
        socket.send("not json")
        answers = [json.loads(socket.recv(timeout=20)) for _ in range(7)]  # the other 6 events and the error
        [error] = [answer["error"] for answer in answers if "error" in answer]
        assert error.startswith('expected {"ack": cursor}: JSON is malformed')
    expected = {int(p): int(o) for p, o in (pair.split(":") for pair in seen[-1]["cursor"].split(","))}
    with connect(broker) as log:
        wait_until(lambda: log.committed("sockets", "orders") == expected, 10, "the acknowledged offsets")
    with websocket(f"{url}&cursor={seen[-1]['cursor']}", additional_headers=headers, proxy=None) as socket:
        rest = [json.loads(socket.recv(timeout=20)) for _ in range(6)]
    assert sorted(m["event"]["data"] for m in seen + rest) == list(range(10))
    with pytest.raises(InvalidStatus) as refused:
        websocket(url, additional_headers={"Authorization": "Bearer imt_wrong"}, proxy=None)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["detail"] == "unknown or revoked token"
