from __future__ import annotations

import dataclasses
import gc
import json
import os
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

import inmotion.events.envelope
from inmotion import Event
from inmotion.errors import InvalidEvent
from inmotion.events import from_batch, from_binary, from_dict, from_json, to_batch, to_binary, to_dict, to_json
from inmotion.events.envelope import new_event
from inmotion.events.http import from_http, to_http


class OrderPlaced(pydantic.BaseModel):
    order_id: str
    total: float
    placed_at: datetime


@dataclasses.dataclass
class ItemReserved:
    sku: str
    quantity: int


class PaymentTaken(msgspec.Struct):
    order_id: str
    amount_cents: int


def test_defaults() -> None:
    event = Event(type="shop.order.placed", source="/shop")
    assert event.specversion == "1.0"
    assert len(event.id) == 36
    assert event.time is not None
    assert event.time.tzinfo is not None
    assert abs(datetime.now(UTC) - event.time) < timedelta(seconds=5)
    assert event.data is None
    assert event.key is None


def test_events_are_not_tracked_by_the_garbage_collector_even_with_container_data() -> None:
    event = Event(type="shop.order.placed", source="/shop", data={"items": [1, 2]}, extensions={"tenant": "a"})
    assert not gc.is_tracked(event)
    assert gc.is_tracked(event.data)  # what the event holds is still collected as usual


def test_ids_are_unique_uuid_text_in_this_process_and_in_forked_children() -> None:
    ids = [Event(type="t", source="/s").id for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {8}
    assert {uuid.UUID(i).variant for i in ids} == {uuid.RFC_4122}
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child's ids must not repeat the parent's sequence
        os.write(write, "\n".join(Event(type="t", source="/s").id for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        theirs = pipe.read().split("\n")
    os.waitpid(child, 0)
    ours = [Event(type="t", source="/s").id for _ in range(100)]
    assert len(theirs) == 100
    assert not set(theirs) & (set(ours) | set(ids))
    assert {i[:24] for i in theirs} != {i[:24] for i in ours}


@given(st.datetimes(timezones=st.just(UTC)) | st.datetimes(timezones=st.timezones()))
def test_time_header_is_rfc3339_and_parses_back(moment: datetime) -> None:
    event = Event(type="t", source="/s", time=moment)
    headers = dict(to_binary(event)[1])
    text = headers["ce_time"].decode()
    if moment.utcoffset() == timedelta(0):
        assert text.endswith("Z")
    instant = moment.astimezone(UTC)  # a time in a DST fold compares unequal to any other zone's
    assert datetime.fromisoformat(text).astimezone(UTC) == instant
    decoded = from_binary(*to_binary(event)).time
    assert decoded is not None
    assert decoded.astimezone(UTC) == instant


def test_create_sets_key_subject_and_extensions() -> None:
    event = Event.create("shop.order.placed", {"n": 1}, source="/shop", key="o-1", subject="o-1", tenant="acme")
    assert event.key == "o-1"
    assert event.extensions == {"partitionkey": "o-1", "tenant": "acme"}
    assert event.subject == "o-1"


@pytest.mark.parametrize(
    ("changes", "attribute"),
    [
        ({"type": ""}, "type"),
        ({"source": 5}, "source"),
        ({"id": ""}, "id"),
        ({"specversion": "0.3"}, "specversion"),
        ({"subject": ""}, "subject"),
        ({"time": datetime(2026, 1, 1)}, "time"),  # naive on purpose
        ({"extensions": {"Tenant": "x"}}, "Tenant"),
        ({"extensions": {"my_ext": "x"}}, "my_ext"),
        ({"extensions": {"data": "x"}}, "data"),
        ({"extensions": {"subject": "x"}}, "subject"),
        ({"extensions": {"n": 2**40}}, "n"),
        ({"extensions": {"n": 1.5}}, "n"),
    ],
)
def test_invalid_events_name_the_attribute(changes: dict[str, Any], attribute: str) -> None:
    arguments: dict[str, Any] = {"type": "t", "source": "/s"} | changes
    with pytest.raises(InvalidEvent) as caught:
        Event(**arguments)
    assert caught.value.attribute == attribute
    assert attribute in str(caught.value)


def test_state_carrying_and_identifier_events() -> None:
    placed = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    state = Event.create("shop.order.placed", OrderPlaced(order_id="o1", total=9.5, placed_at=placed), source="/shop")
    identifier = Event.create("shop.order.changed", source="/shop", subject="orders/o1")
    assert to_dict(state)["data"] == {"order_id": "o1", "total": 9.5, "placed_at": "2026-11-26T09:30:00Z"}
    assert "data" not in to_dict(identifier)
    assert from_json(to_json(identifier)).subject == "orders/o1"


@pytest.mark.parametrize(
    ("payload", "cls"),
    [
        (OrderPlaced(order_id="o1", total=9.5, placed_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)), OrderPlaced),
        (ItemReserved(sku="A-1", quantity=3), ItemReserved),
        (PaymentTaken(order_id="o1", amount_cents=950), PaymentTaken),
        ({"plain": [1, 2, {"x": None}]}, dict),
    ],
)
def test_typed_payloads_round_trip_in_both_modes(payload: Any, cls: type[Any]) -> None:
    event = Event.create("t", payload, source="/s", key="k")
    structured = from_json(to_json(event))
    binary = from_binary(*to_binary(event))
    for decoded in (structured, binary):
        assert decoded.data_as(cls) == payload
        assert decoded.id == event.id
        assert decoded.key == "k"
        assert decoded.time == event.time


def test_data_as_reports_mismatch() -> None:
    event = Event.create("t", {"sku": "A"}, source="/s")
    with pytest.raises(InvalidEvent) as caught:
        event.data_as(ItemReserved)
    assert caught.value.attribute == "data"


def test_bytes_travel_as_data_base64() -> None:
    event = Event.create("blob", b"\x00\xffraw", source="/s")
    document = to_dict(event)
    assert document["data_base64"] == "AP9yYXc="
    assert "data" not in document
    assert from_dict(document).data == b"\x00\xffraw"
    assert from_binary(*to_binary(event)).data == b"\x00\xffraw"


def test_text_data_with_non_json_content_type() -> None:
    event = Event.create("note", "hello <b>", source="/s", datacontenttype="text/html")
    key, headers, value = to_binary(event)
    assert value == b"hello <b>"
    assert ("content-type", b"text/html") in headers
    assert from_binary(key, headers, value).data == "hello <b>"
    assert from_json(to_json(event)).data == "hello <b>"


def test_spec_example_parses() -> None:
    text = json.dumps(
        {
            "specversion": "1.0",
            "type": "com.github.pull_request.opened",
            "source": "https://github.com/cloudevents/spec/pull",
            "subject": "123",
            "id": "A234-1234-1234",
            "time": "2018-04-05T17:31:00Z",
            "comexampleextension1": "value",
            "comexampleothervalue": 5,
            "datacontenttype": "text/xml",
            "data": '<much wow="xml"/>',
        }
    )
    event = from_json(text)
    assert event.time == datetime(2018, 4, 5, 17, 31, tzinfo=UTC)
    assert event.extensions == {"comexampleextension1": "value", "comexampleothervalue": 5}
    assert event.data == '<much wow="xml"/>'
    assert json.loads(to_json(event)) == json.loads(text)


@pytest.mark.parametrize(
    ("document", "attribute"),
    [
        ({"specversion": "1.0", "id": "1", "source": "/s"}, "type"),
        ({"specversion": "1.0", "id": "1", "type": "t"}, "source"),
        ({"id": "1", "type": "t", "source": "/s"}, "specversion"),
        ({"specversion": "1.0", "type": "t", "source": "/s"}, "id"),
        ({"specversion": "1.0", "id": "1", "type": "t", "source": "/s", "time": "yesterday"}, "time"),
        ({"specversion": "1.0", "id": "1", "type": "t", "source": "/s", "time": "2026-01-01T00:00:00"}, "time"),
        ({"specversion": "1.0", "id": "1", "type": "t", "source": "/s", "data_base64": "%%%"}, "data_base64"),
        (
            {"specversion": "1.0", "id": "1", "type": "t", "source": "/s", "data": 1, "data_base64": "AA=="},
            "data_base64",
        ),
        ({"specversion": "1.0", "id": "1", "type": "t", "source": "/s", "Bad_Name": "x"}, "Bad_Name"),
        ({"specversion": "1.0", "id": "1", "type": "t", "source": "/s", "ext": {"nested": 1}}, "ext"),
        ({"specversion": "1.0", "id": 7, "type": "t", "source": "/s"}, "id"),
    ],
)
def test_invalid_structured_events(document: dict[str, Any], attribute: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        from_dict(document)
    assert caught.value.attribute == attribute


def test_malformed_json_is_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="malformed"):
        from_json("{not json")
    with pytest.raises(InvalidEvent):
        from_json("[1, 2]")


def test_batch_format_both_ways() -> None:
    events = [Event.create("t", {"i": i}, source="/s") for i in range(3)]
    decoded = from_batch(to_batch(events))
    assert [e.id for e in decoded] == [e.id for e in events]
    assert [e.data for e in decoded] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert from_batch("[]") == []
    with pytest.raises(InvalidEvent):
        from_batch('{"specversion": "1.0"}')


def test_a_bad_event_in_a_batch_is_named_by_its_index() -> None:
    good = to_dict(Event.create("t", {}, source="/s"))
    with pytest.raises(InvalidEvent, match=r"^invalid event at index 2 of the batch: source: ") as caught:
        from_batch(json.dumps([good, good, {"specversion": "1.0", "id": "x", "type": "t"}]))
    assert (caught.value.attribute, caught.value.index) == ("source", 2)


def test_binary_mode_headers_are_the_kafka_binding() -> None:
    event = Event.create("t", {"x": 1}, source="/s", key="k1", subject="sub", traceparent="00-abc", flag=True)
    key, headers, value = to_binary(event)
    names = dict(headers)
    assert key == b"k1"
    assert value == b'{"x":1}'
    assert names["ce_type"] == b"t"
    assert names["ce_source"] == b"/s"
    assert names["ce_specversion"] == b"1.0"
    assert names["ce_id"] == event.id.encode()
    assert names["ce_subject"] == b"sub"
    assert names["ce_traceparent"] == b"00-abc"
    assert names["ce_flag"] == b"true"
    assert names["content-type"] == b"application/json"
    assert "ce_partitionkey" not in names


def test_data_that_is_not_json_is_refused_naming_its_type() -> None:
    for data in ({"when": object()}, [object()], object()):
        with pytest.raises(InvalidEvent, match=r"data: cannot encode (dict|list|object) as JSON"):
            to_binary(Event(type="t", source="s", data=data))


def test_binary_mode_without_required_header() -> None:
    with pytest.raises(InvalidEvent) as caught:
        from_binary(None, [("ce_id", b"1"), ("ce_source", b"/s"), ("ce_specversion", b"1.0")], b"{}")
    assert caught.value.attribute == "type"


def test_binary_mode_headers_without_a_value_from_other_kafka_clients() -> None:
    """A Kafka header may have no value (None): it counts as absent, as the consumers' own
    reading of the content type has it (it was an AttributeError, which tail showed as a
    traceback and a consumer that wants the envelope took for a fault of the log, retrying
    the record forever)."""
    headers = [("ce_id", b"1"), ("ce_source", b"/s"), ("ce_specversion", b"1.0")]
    nothing: list[tuple[str, Any]] = [("traceparent", None), ("ce_subject", None), ("content-type", None)]
    event = from_binary(None, [*headers, ("ce_type", b"t"), *nothing], b'{"a": 1}')
    assert (event.subject, event.datacontenttype, event.data) == (None, None, {"a": 1})
    with pytest.raises(InvalidEvent, match="type: required attribute is missing"):
        from_binary(None, [*headers, ("ce_type", None)], b"{}")


def test_binary_mode_foreign_bytes_without_content_type_stay_bytes() -> None:
    headers = [("ce_id", b"1"), ("ce_source", b"/s"), ("ce_specversion", b"1.0"), ("ce_type", b"t")]
    assert from_binary(None, headers, b"\x00not json").data == b"\x00not json"
    with pytest.raises(InvalidEvent):
        from_binary(None, [*headers, ("content-type", b"application/json")], b"{broken")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_names = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True).filter(
    lambda n: (
        n not in {"id", "source", "specversion", "type", "subject", "time", "data", "dataschema", "datacontenttype"}
    )
)


@given(
    type_=st.text(min_size=1, max_size=30),
    source=st.text(min_size=1, max_size=30),
    subject=st.none() | st.text(min_size=1, max_size=20),
    data=_json_values | st.binary(max_size=30),
    extensions=st.dictionaries(
        _names, st.text(max_size=10) | st.integers(-(2**31), 2**31 - 1) | st.booleans(), max_size=3
    ),
    offset_minutes=st.integers(-600, 600),
)
def test_any_event_round_trips_in_structured_mode(
    type_: str, source: str, subject: str | None, data: Any, extensions: dict[str, Any], offset_minutes: int
) -> None:
    moment = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=timezone(timedelta(minutes=offset_minutes)))
    event = Event(type=type_, source=source, subject=subject, data=data, extensions=extensions, time=moment)
    decoded = from_json(to_json(event))
    assert decoded == event


@given(data=_json_values, key=st.none() | st.text(min_size=1, max_size=10))
def test_any_json_data_round_trips_in_binary_mode(data: Any, key: str | None) -> None:
    event = Event.create("t", data, source="/s", key=key)
    decoded = from_binary(*to_binary(event))
    assert decoded.data == event.data
    assert decoded.key == key


def test_new_event_is_the_event_its_attributes_make_with_its_own_id_time_and_extensions() -> None:
    before = datetime.now(UTC)
    first = new_event("shop.order.placed", "/shop", {"n": 1}, key="c-1")
    second = new_event("shop.order.placed", "/shop", {"n": 2}, subject="orders/2")
    third = new_event("shop.order.placed", "/shop", [3], key="c-3")  # the first one's template again
    expected = Event(type="shop.order.placed", source="/shop", data={"n": 1}, extensions={"partitionkey": "c-1"})
    assert first == msgspec.structs.replace(expected, id=first.id, time=first.time)
    assert (second.subject, second.key, second.extensions, second.data) == ("orders/2", None, {}, {"n": 2})
    assert (third.key, third.data, third.subject) == ("c-3", [3], None)
    assert len({first.id, second.id, third.id}) == 3
    assert first.time is not None
    assert first.time.tzinfo is UTC
    assert first.time >= before
    assert first.extensions is not third.extensions  # no dict shared between events
    assert to_binary(first)[0] == b"c-1"
    number: Any = 7
    assert new_event("t", "/s", key=number).extensions == {"partitionkey": 7}  # as Event takes it


@pytest.mark.parametrize(
    ("arguments", "attribute"),
    [
        ({"type": "", "source": "/s"}, "type"),
        ({"type": ["t"], "source": "/s"}, "type"),  # unhashable: no template, Event names it
        ({"type": "t", "source": 5}, "source"),
        ({"type": "t", "source": "/s", "subject": ""}, "subject"),
        ({"type": "t", "source": "/s", "key": 1.5}, "partitionkey"),
        ({"type": "t", "source": "/s", "subject": 5}, "subject"),
    ],
)
def test_new_event_checks_what_event_checks(arguments: dict[str, Any], attribute: str) -> None:
    for _ in range(2):  # a refused template is not kept: the second call is refused too
        with pytest.raises(InvalidEvent) as caught:
            new_event(**arguments)
        assert caught.value.attribute == attribute


def test_new_event_builds_in_full_once_its_templates_are_all_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("inmotion.events.envelope._MAX_TEMPLATES", 0)
    monkeypatch.setattr("inmotion.events.envelope._templates", {})
    event = new_event("t.full", "/s", {"n": 1}, subject="orders/1", key="k")
    assert (event.type, event.source, event.data) == ("t.full", "/s", {"n": 1})
    assert (event.subject, event.key) == ("orders/1", "k")
    assert not inmotion.events.envelope._templates
    with pytest.raises(InvalidEvent, match="subject"):
        new_event("t.full", "/s", subject="")


@given(
    type_=st.text(min_size=1, max_size=30),
    source=st.text(min_size=1, max_size=30),
    subject=st.none() | st.text(min_size=1, max_size=20),
    data=_json_values | st.binary(max_size=30),
    extensions=st.dictionaries(_names, st.text(max_size=10), max_size=3),
    key=st.none() | st.text(min_size=1, max_size=10),
    mode=st.sampled_from(["binary", "structured"]),
)
def test_any_event_round_trips_through_the_http_binding(
    type_: str, source: str, subject: str | None, data: Any, extensions: dict[str, str], key: str | None, mode: Any
) -> None:
    """Binary mode: every attribute in a `ce-*` header, percent-encoded to printable ASCII
    (what an HTTP header may carry) and decoded back; structured mode: the JSON format."""
    event = Event.create(type_, data, source=source, subject=subject, key=key).replace(
        extensions={**extensions, **({"partitionkey": key} if key is not None else {})}
    )
    headers, body = to_http(event, mode)
    assert all(value.isascii() and value.isprintable() for value in headers.values())
    # binary mode names the data's content type, as the Kafka binding does
    assert from_http(headers.items(), body) == [event if mode == "structured" else from_binary(*to_binary(event))]


@given(
    headers=st.dictionaries(
        st.sampled_from(["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-x", "content-type"]),
        st.text(max_size=12),
    ),
    body=st.binary(max_size=20),
)
def test_any_http_request_is_an_event_or_an_invalid_event_error(headers: dict[str, str], body: bytes) -> None:
    try:
        from_http(headers.items(), body)
    except InvalidEvent as error:
        problem = error
    else:
        return
    assert problem.attribute
