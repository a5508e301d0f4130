"""`inmotion rules test|check` through the real command-line app."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inmotion import Event
from inmotion.cli.main import app
from inmotion.log import TopicConfig, connect
from inmotion.testing import wait_until
from tests.conftest import Place

runner = CliRunner()

PATTERN = {"source": ["aws.ec2"], "detail": {"state": [{"anything-but": "initializing"}]}}
EVENT = {"source": "aws.ec2", "detail": {"state": "running"}}


def rules(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["rules", *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_match_exits_0_and_says_why() -> None:
    code, out, err = rules("test", "--pattern", json.dumps(PATTERN), "--event", json.dumps(EVENT))
    assert code == 0
    assert out.splitlines() == [
        "match",
        '  ok   source: "aws.ec2" against ["aws.ec2"]',
        '  ok   detail.state: "running" against [{"anything-but": "initializing"}]',
    ]
    assert err == ""


def test_no_match_exits_1_and_names_the_failing_field() -> None:
    event = {"source": "aws.ec2", "detail": {"state": "initializing"}}
    code, out, _ = rules("test", "-p", json.dumps(PATTERN), "-e", json.dumps(event))
    assert code == 1
    assert out.splitlines()[0] == "no match"
    assert '  FAIL detail.state: "initializing" against [{"anything-but": "initializing"}]' in out.splitlines()


def test_fields_in_different_array_elements_are_explained() -> None:
    pattern = {"items": {"sku": ["A"], "qty": [2]}}
    event = {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]}
    code, out, _ = rules("test", "-p", json.dumps(pattern), "-e", json.dumps(event))
    assert code == 1
    assert "only in different elements of one array" in out


def test_json_gives_one_object_with_the_verdict_and_each_field() -> None:
    code, out, err = rules("test", "--json", "-p", json.dumps(PATTERN), "-e", json.dumps(EVENT))
    assert (code, err) == (0, "")
    assert [json.loads(line) for line in out.splitlines()] == [
        {
            "match": True,
            "fields": [
                {"alternative": 1, "field": "source", "values": ["aws.ec2"], "condition": ["aws.ec2"], "ok": True},
                {
                    "alternative": 1,
                    "field": "detail.state",
                    "values": ["running"],
                    "condition": [{"anything-but": "initializing"}],
                    "ok": True,
                },
            ],
        }
    ]
    pattern = {"$or": [{"a": [1]}, {"b": [{"exists": False}]}]}
    code, out, _ = rules("test", "--json", "-p", json.dumps(pattern), "-e", '{"b": 2}')
    assert code == 1
    assert json.loads(out) == {
        "match": False,
        "fields": [
            {"alternative": 1, "field": "a", "values": [], "condition": [1], "ok": False},
            {"alternative": 2, "field": "b", "values": [2], "condition": [{"exists": False}], "ok": False},
        ],
    }
    code, out, err = rules("test", "--json", "-p", '{"a": 1}', "-e", "{}")
    assert (code, out) == (2, "")
    assert err.startswith("error: invalid pattern at a:")


def test_pattern_and_event_from_files(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps(PATTERN))
    (tmp_path / "e.json").write_text(json.dumps(EVENT))
    code, out, _ = rules("test", "--pattern", f"@{tmp_path / 'p.json'}", "--event", f"@{tmp_path / 'e.json'}", "-q")
    assert code == 0
    assert out == ""


@pytest.mark.parametrize(
    ("pattern", "event", "message"),
    [
        ('{"source": "aws.ec2"}', "{}", "error: invalid pattern at source: must be an object or a non-empty array"),
        ('{"a": [{"wildcard": "x**"}]}', "{}", "error: invalid pattern at a[0].wildcard: consecutive wildcard"),
        ("{not json", "{}", "error: invalid pattern at <root>: malformed JSON"),
        ('{"a": ["x"]}', "[1, 2]", "error: invalid event"),
        ('{"a": ["x"]}', "{oops", "error: invalid event"),
        ("@/nonexistent/p.json", "{}", "error: cannot read pattern file '/nonexistent/p.json'"),
    ],
)
def test_invalid_input_exits_2_with_one_line(pattern: str, event: str, message: str) -> None:
    code, out, err = rules("test", "-p", pattern, "-e", event)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(message)


def test_nesting_beyond_the_limits_is_invalid_not_a_mismatch() -> None:
    for depth, message in [
        (10_000, "error: invalid pattern at <root>: nested too deeply: patterns nest at most 100 objects deep"),
        (150, "error: invalid pattern at " + ".".join(["a"] * 100) + ": nested too deeply"),
    ]:
        code, out, err = rules("test", "-p", '{"a":' * depth + '["x"]' + "}" * depth, "-e", '{"a": 1}')
        assert (code, out, len(err.splitlines())) == (2, "", 1)
        assert err.startswith(message)
    code, out, err = rules("test", "-p", '{"a": ["x"]}', "-e", '{"a":' * 2_000 + '"x"' + "}" * 2_000)
    assert (code, out, err) == (2, "", "error: invalid event: nested too deeply to read\n")
    code, out, _ = rules("test", "-p", '{"a": ["x"]}', "-e", '{"a":' + "[" * 400 + '"x"' + "]" * 400 + "}")
    assert (code, out.splitlines()[0]) == (0, "match")


def test_files_that_are_not_utf8_are_invalid(tmp_path: Path) -> None:
    (tmp_path / "event.json").write_bytes(b'{"a": "caf\xe9"}')
    code, out, err = rules("test", "-p", '{"a": ["x"]}', "-e", f"@{tmp_path / 'event.json'}")
    assert (code, out) == (2, "")
    assert err == f"error: cannot read event file '{tmp_path / 'event.json'}': not UTF-8 text (byte 10 is 0xe9)\n"
    (tmp_path / "rules.yaml").write_bytes(b"rules:\n  - name: caf\xe9\n")
    code, out, err = rules("check", str(tmp_path / "rules.yaml"))
    assert (code, out) == (2, "")
    assert err == f"error: cannot read rules file '{tmp_path / 'rules.yaml'}': not UTF-8 text (byte 20 is 0xe9)\n"


VALID = """
unmatched: orders.unmatched
rules:
  - name: big-orders
    sources: [orders]
    pattern: {type: [com.acme.order.created], data: {amount: [{numeric: [">=", 1000]}]}}
    transform:
      paths: {id: $.data.id}
      template: '{"order": "<id>"}'
    targets:
      - topic: big-orders
      - http: http://127.0.0.1:9/hook
        mode: structured
        retry: {attempts: 5, backoff: 0.1}
        dead_letter: big-orders.dlq
  - name: everything-eu
    pattern: '{"data": {"region": [{"prefix": "eu-"}]}}'
    targets:
      - handler: json:dumps
"""


def test_check_accepts_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(VALID)
    broker = f"sqlite:///{tmp_path}/check.db"
    with connect(broker) as log:
        for topic in ("orders", "big-orders"):  # the unmatched and dead-letter topics are made as needed
            log.create_topic(topic)
    code, out, err = rules("check", str(path), "--broker", broker)
    assert code == 0, err
    assert out.splitlines() == [
        f"{path}: 2 rules OK",
        "  big-orders: orders -> topic big-orders; POST http://127.0.0.1:9/hook (structured)",
        "  everything-eu: all sources -> handler dumps",
    ]


def test_check_json_gives_one_object_per_rule(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(VALID)
    broker = f"sqlite:///{tmp_path}/check.db"
    with connect(broker) as log:
        for topic in ("orders", "big-orders"):
            log.create_topic(topic)
    code, out, err = rules("check", "--json", str(path), "--broker", broker)
    assert (code, err) == (0, "")
    assert [json.loads(line) for line in out.splitlines()] == [
        {
            "file": str(path),
            "rule": "big-orders",
            "sources": ["orders"],
            "targets": ["topic big-orders", "POST http://127.0.0.1:9/hook (structured)"],
        },
        {"file": str(path), "rule": "everything-eu", "sources": [], "targets": ["handler dumps"]},
    ]
    path.write_text("rules: [")
    code, out, err = rules("check", "--json", str(path), "--broker", broker)
    assert (code, out) == (2, "")
    assert "not valid YAML" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "not valid YAML"),
        ("other: 1", "expected a mapping with a 'rules' list"),
        ("rules: []\nextra: 1", "unknown top-level keys: extra"),
        ("rules:\n  - name: r\n    targets: [{topic: t}]", "rule 'r': a rule needs a pattern"),
        (
            "rules:\n  - name: r\n    pattern: {a: x}\n    targets: [{topic: t}]",
            "rule 'r': must be an object or a non-empty array",
        ),
        ("rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: []", "rule 'r': a rule needs a non-empty"),
        ("rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: [{topic: 'bad name'}]", "invalid topic name"),
        ("rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: [{topic: t, http: 'http://x'}]", "exactly one"),
        ("rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: [{http: 'ftp://x'}]", "http:// or https://"),
        ("rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: [{handler: 'nope.nothing:f'}]", "cannot import"),
        (
            "rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: [{handler: 'json:dumps', retry: {attempts: 0}}]",
            "attempts",
        ),
        (
            "rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: [{topic: t, retry: {attempts: 2}}]",
            "topic target: retry",
        ),
        (
            "rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: [{topic: t}]\n"
            "  - name: r\n    pattern: {a: [y]}\n    targets: [{topic: t}]",
            "rule names must be unique: r",
        ),
        (
            "rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: [{topic: t}]\n"
            "    transform: {paths: {}, template: '<id>'}",
            "the template uses <id>",
        ),
        (
            "rules:\n  - name: r\n    pattern: {a: [x]}\n    pattern: {a: [y]}\n    targets: [{topic: t}]",
            "not valid YAML at line 4, column 5: duplicate key 'pattern' (first at line 3)",
        ),
        ("rules:\n  - {name: r, name: s, pattern: {a: [x]}, targets: [{topic: t}]}", "duplicate key 'name'"),
        ("rules: []\nunmatched: a\nunmatched: b", "line 3, column 1: duplicate key 'unmatched' (first at line 2)"),
        ("rules:\n  - name: r\n    pattern: {a: [x], a: [y]}\n    targets: [{topic: t}]", "duplicate key 'a'"),
        *(
            (
                f"rules:\n  - name: r\n    pattern: {{a: [x]}}\n"
                f"    targets: [{{http: 'http://x', timeout: {timeout}}}]",
                f"rule 'r': HTTP timeout must be a positive, finite number of seconds, got {shown}",
            )
            for timeout, shown in [(".inf", "inf"), (".nan", "nan"), ("-1", "-1"), ("0", "0"), ("'5'", "'5'")]
        ),
        (
            "rules:\n  - name: r\n    pattern: {a: [x]}\n"
            '    targets: [{http: "http://x", headers: {X-Note: "a\\r\\nX-Admin: yes"}}]',
            "rule 'r': HTTP header 'X-Note': names are tokens, values printable ASCII (no CR or LF)",
        ),
        (
            'rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: [{http: "http://x", headers: {"X Note": "a"}}]',
            "HTTP header 'X Note': names are tokens",
        ),
        (
            'rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: [{http: "http://x", headers: {X-List: [1, 2]}}]',
            "HTTP header 'X-List': the value is a string or a number",
        ),
        ("rules: &loop [*loop]", "not valid YAML at line 1, column 8: an alias refers to a node that contains it"),
        ("rules: " + "[" * 5_000 + "]" * 5_000, "not valid YAML: nested too deeply"),
    ],
)
def test_check_rejects_a_bad_file_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    code, out, err = rules("check", str(path))
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert message in err


def test_check_refuses_aliases_that_expand_past_the_limit(tmp_path: Path) -> None:
    """A million strings in a few lines (main accepted it, walking every one)."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 6)]
    text = (
        "rules:\n  - name: r\n    pattern: {a: [x]}\n    targets: [{topic: t}]\n"
        f"    description: {{{', '.join(levels)}}}\n"
    )
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    code, out, err = rules("check", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {path}: not valid YAML at line 5, column 243: ")
    assert err.endswith(": the document expands to more than 100,000 nodes (aliases count at each use)\n")


def test_check_accepts_anchors_aliases_and_merge_keys(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - name: first\n    pattern: &orders {type: [order]}\n"
        "    targets: [&hook {http: 'http://127.0.0.1:9/hook', timeout: 2.5, headers: {X-Team: 7}}]\n"
        "  - name: second\n    pattern: *orders\n"
        "    targets: [{<<: *hook, timeout: 1}]\n"
    )
    code, out, err = rules("check", str(path), "--broker", "memory://")
    assert code == 0, err
    assert out.splitlines()[1:] == [
        "  first: all sources -> POST http://127.0.0.1:9/hook (binary)",
        "  second: all sources -> POST http://127.0.0.1:9/hook (binary)",
    ]


@pytest.mark.parametrize("command", [["rules", "check", "--help"], ["route", "--help"]])
def test_help_describes_the_rules_file(command: list[str]) -> None:
    result = runner.invoke(app, command, env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for words in [
        "rules: the list of rules (required). unmatched: a topic for events no rule matches.",
        "A rule: name (unique, required); pattern (an EventBridge event pattern",
        "A target names one of: topic: TOPIC; handler: package.module:function; http: URL, with mode",
        "A handler or HTTP target may add retry (attempts 5, backoff 0.2, multiplier 2, max_backoff 30 seconds,",
    ]:
        assert words in text


def test_check_a_missing_file(tmp_path: Path) -> None:
    code, _, err = rules("check", str(tmp_path / "absent.yaml"))
    assert code == 2
    assert "cannot read rules file" in err


def route(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["route", *args])
    return result.exit_code, result.stdout, result.stderr


def test_route_once_delivers_and_commits_creating_the_unmatched_topic(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path}/route.db"
    with connect(broker) as log:
        for topic in ("orders", "big"):
            log.create_topic(topic)
        log.append_events(
            "orders", [Event.create("order", {"amount": amount}, source="/shop") for amount in (5, 500, 700)]
        )
    (tmp_path / "rules.yaml").write_text(
        "unmatched: rest\nrules:\n  - name: big\n    sources: [orders]\n"
        '    pattern: {data: {amount: [{numeric: [">", 100]}]}}\n    targets: [{topic: big}]\n'
    )
    arguments = ["--rules", str(tmp_path / "rules.yaml"), "--once", "--broker", broker]
    code, _, err = route(*arguments)
    assert code == 0, err
    assert "routed 3 events, 1 matched no rule" in err
    with connect(broker) as log:
        assert [r.event().data["amount"] for r in log.read("big", 0, 0)] == [500, 700]
        assert [r.event().data["amount"] for p in range(4) for r in log.read("rest", p, 0)] == [5]
        assert log.committed("inmotion-router", "orders") == {0: 3}
    code, _, err = route(*arguments)
    assert (code, "routed 0 events" in err) == (0, True)


def test_check_and_route_name_every_missing_topic_and_route_nothing(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path}/missing.db"
    with connect(broker) as log:
        log.create_topic("orders")
        log.append_events("orders", [Event.create("order", {"amount": 500}, source="/shop")])
    path = tmp_path / "rules.yaml"
    path.write_text(
        "unmatched: rest\nrules:\n  - name: big\n    sources: [orders, returns]\n"
        "    pattern: {type: [order]}\n    targets: [{topic: big}, {handler: 'json:dumps'}]\n"
    )
    code, out, err = rules("check", str(path), "--broker", broker)
    assert (code, out) == (1, "")
    assert err.splitlines() == [f"error: {path}: missing topics: big, returns (create them: inmotion topics create)"]
    code, _, err = route("--rules", str(path), "--once", "--broker", broker)
    assert code != 0
    assert err.splitlines() == [f"error: {path}: missing topics: big, returns (create them: inmotion topics create)"]
    with connect(broker) as log:
        assert log.list_topics() == ["orders"]
        assert log.committed("inmotion-router", "orders") == {}


def test_dlq_list_and_redrive_on_a_router_dead_letter_reach_only_its_target(tmp_path: Path) -> None:
    from tests.routing.test_router import Endpoint

    broker = f"sqlite:///{tmp_path}/dlq.db"
    with connect(broker) as log:
        for topic in ("orders", "copies"):
            log.create_topic(topic)
        log.append_events("orders", [Event.create("order", {"n": 1}, source="/shop", key="k1")])
    endpoint = Endpoint()
    try:
        endpoint.script = [403]
        (tmp_path / "rules.yaml").write_text(
            f"rules:\n  - name: all\n    sources: [orders]\n    pattern: {{type: [order]}}\n"
            f"    targets: [{{topic: copies}}, {{http: '{endpoint.url}'}}]\n"
        )
        arguments = ["--rules", str(tmp_path / "rules.yaml"), "--once", "--broker", broker]
        code, _, err = route(*arguments)
        assert code == 0, err
        listed = runner.invoke(app, ["dlq", "list", "--broker", broker])
        assert listed.exit_code == 0, listed.stderr
        (line,) = listed.stdout.splitlines()
        assert line.startswith("inmotion-router.all.1.dlq@0  from inmotion-router.all.1/")
        assert line.endswith(f"attempts=1  DeliveryRejected: HTTP 403 Forbidden from {endpoint.url}")
        redriven = runner.invoke(app, ["dlq", "redrive", "inmotion-router.all.1.dlq", "--broker", broker])
        assert redriven.exit_code == 0, redriven.stderr
        assert "redrove 1 event(s)" in redriven.stdout
        code, _, err = route(*arguments)
        assert code == 0, err
    finally:
        endpoint.close()
    assert len(endpoint.requests) == 2  # the first try, refused, and the redriven one
    assert len({headers["ce-id"] for headers, _ in endpoint.requests}) == 1
    with connect(broker) as log:
        assert log.latest_offset("copies", 0) == 1  # the other target did not get it again


def test_two_router_processes_share_the_partitions(place: Place, tmp_path: Path) -> None:
    broker, orders, copies, routers_group = place.url, place.topic, f"{place.topic}-copies", f"{place.group}-routers"
    with connect(broker) as log:
        log.create_topic(orders, TopicConfig(partitions=4))
        log.create_topic(copies, TopicConfig(partitions=1))
    (tmp_path / "rules.yaml").write_text(
        f"rules:\n  - name: all\n    sources: [{orders}]\n    pattern: {{type: [order]}}\n"
        f"    targets: [{{topic: {copies}}}]\n"
    )
    command = [sys.executable, "-m", "inmotion", "route", "--rules", str(tmp_path / "rules.yaml")]
    command += ["--group", routers_group, "--broker", broker]
    routers = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ) for _ in range(2)]
    try:
        with connect(broker) as log:
            coordinator = log.group_coordinator()

            def split() -> bool:
                owners = coordinator.owners(routers_group)
                return len(owners) == 4 and len(set(owners.values())) == 2

            wait_until(split, 60, "the two routers to split the partitions")
            log.append_events(
                orders, [Event.create("order", {"n": n}, source="/shop", key=f"k{n}") for n in range(200)]
            )
            wait_until(lambda: log.latest_offset(copies, 0) >= 200, 60, "everything to be routed")
            coordinator.close()
        for router in routers:
            router.send_signal(signal.SIGTERM)
        errors = [router.communicate(timeout=60)[1] for router in routers]
    finally:
        for router in routers:
            router.kill()
    counts = [int(next(line for line in err.splitlines() if line.startswith("routed")).split()[1]) for err in errors]
    assert all(count > 0 for count in counts), errors
    assert sum(counts) == 200
    with connect(broker) as log:
        assert sorted(r.event().data["n"] for r in log.read(copies, 0, 0, limit=1000)) == list(range(200))


def test_two_routers_with_a_slow_target_deliver_each_event_once_in_key_order(tmp_path: Path) -> None:
    """The review's case: a delivery that outlasts the session timeout (2.5 s against 1 s) let
    the second router take the partition mid-batch and deliver everything again, out of key
    order. Leases now heartbeat while targets work, and each target has its own group."""
    from tests.routing.test_router import Endpoint

    broker = f"sqlite:///{tmp_path}/slow.db"
    with connect(broker) as log:
        log.create_topic("orders", TopicConfig(partitions=2))
    endpoint = Endpoint()
    endpoint.delay = 2.5
    (tmp_path / "rules.yaml").write_text(
        f"rules:\n  - name: all\n    sources: [orders]\n    pattern: {{type: [order]}}\n"
        f"    targets: [{{http: '{endpoint.url}', timeout: 10}}]\n"
    )
    command = [sys.executable, "-m", "inmotion", "route", "--rules", str(tmp_path / "rules.yaml")]
    command += ["--group", "routers", "--session-timeout", "1", "--broker", broker]
    routers = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ) for _ in range(2)]
    try:
        with connect(broker) as log:
            coordinator = log.group_coordinator()
            deadline = time.monotonic() + 60
            while len(set(coordinator.owners("routers").values())) < 2:
                assert time.monotonic() < deadline, "the two routers never split the partitions"
                time.sleep(0.05)
            log.append_events(
                "orders",
                [Event.create("order", {"n": n}, source="/shop", key=f"k{n % 3}") for n in range(6)],
            )
            delivery = "routers.all.0"

            def delivered() -> bool:
                if delivery not in log.list_topics():
                    return False
                committed = log.committed(delivery, delivery)
                return (
                    sum(committed.values())
                    == 6
                    == sum(log.latest_offset(delivery, p) for p in range(log.partition_count(delivery)))
                )

            while not delivered():
                assert time.monotonic() < deadline, f"not everything was delivered: {len(endpoint.requests)}"
                time.sleep(0.05)
            coordinator.close()
        for router in routers:
            router.send_signal(signal.SIGTERM)
        errors = [router.communicate(timeout=60)[1] for router in routers]
    finally:
        for router in routers:
            router.kill()
        endpoint.close()
    received = [json.loads(body)["n"] for _, body in endpoint.requests]
    assert sorted(received) == list(range(6)), errors
    for key in range(3):
        assert [n for n in received if n % 3 == key] == [key, key + 3]
