"""Records of a table's topic as an Arrow batch of the columns a query reads.

The events' JSON data is parsed by Arrow's JSON reader, in C++, for the whole batch at once and
only for the fields the query uses; metadata columns come from the records' envelope. A batch
the reader refuses (an event whose data is not a JSON object, or a field of the wrong type) is
read again event by event: such an event is left out and counted, the others go on (as Flink's
`json.ignore-parse-errors`, but counted). Timestamps are ISO-8601 text (or milliseconds since
the epoch, on the slow path), held in milliseconds, UTC."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from inmotion.log import Record
from inmotion.streams.expressions import ARROW_TYPES
from inmotion.streams.sql import Column, Table

_HEADERS = {"datacontenttype": "content-type"}
_PARSED_TIME = pa.timestamp("us", tz="UTC")
_decoder = msgspec.json.Decoder()


class Decoder:
    """Decodes records of `table` into batches of its columns `reads`."""

    def __init__(self, table: Table, reads: Sequence[str]) -> None:
        columns = [column for column in table.columns if column.name in reads]
        self.schema = pa.schema([(c.name, ARROW_TYPES[c.type]) for c in columns])
        self.data = [c for c in columns if c.metadata is None and not c.proctime]
        self.metadata = [c for c in columns if c.metadata is not None]
        self.proctime = [c.name for c in columns if c.proctime]
        self._json_schema = pa.schema([(c.name, _parsed_type(c)) for c in self.data])
        self._options = pj.ParseOptions(explicit_schema=self._json_schema, unexpected_field_behavior="ignore")
        self._read = pj.ReadOptions(use_threads=False, block_size=1 << 26)

    def decode(self, records: Sequence[Record], now: float = 0.0) -> tuple[pa.Table, int]:
        """The batch of `records` (those with data: a tombstone has no row), and how many of
        them were left out as malformed. Processing-time columns hold `now` (seconds)."""
        records = [r for r in records if r.value is not None]
        given = len(records)
        data = self._data_fast(records) if self.data else {}
        if data is None:
            records, data = self._data_slow(records)
        columns = {**data, **{c.name: self._metadata(c, records) for c in self.metadata}}
        if self.proctime:
            stamp = pa.scalar(int(now * 1000), pa.int64()).cast(ARROW_TYPES["TIMESTAMP_LTZ"])
            columns.update({name: pa.repeat(stamp, len(records)) for name in self.proctime})
        return pa.table([columns[name] for name in self.schema.names], schema=self.schema), given - len(records)

    def _data_fast(self, records: Sequence[Record]) -> dict[str, Any] | None:
        if not records:
            return {c.name: pa.array([], ARROW_TYPES[c.type]) for c in self.data}
        try:
            parsed = pj.read_json(
                io.BytesIO(b"\n".join(r.value for r in records if r.value is not None)),
                read_options=self._read,
                parse_options=self._options,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if parsed.num_rows != len(records):  # a value spread over lines: read it event by event
            return None
        return {c.name: _held(parsed.column(c.name), c) for c in self.data}

    def _data_slow(self, records: Sequence[Record]) -> tuple[list[Record], dict[str, Any]]:
        kept: list[Record] = []
        rows: list[list[Any]] = []
        converters = [(c.name, _CONVERTERS[c.type]) for c in self.data]
        for record in records:
            try:
                document = _decoder.decode(record.value or b"")
                if not isinstance(document, dict):
                    continue
                rows.append([convert(document.get(name)) for name, convert in converters])
            except (msgspec.DecodeError, ValueError, TypeError, OverflowError):
                continue
            kept.append(record)
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in self.data]
        return kept, {
            c.name: pa.array(list(values), ARROW_TYPES[c.type]) for c, values in zip(self.data, columns, strict=True)
        }

    def _metadata(self, column: Column, records: Sequence[Record]) -> pa.Array:
        name = column.metadata
        values: list[Any]
        if name == "key":
            values = [None if r.key is None else r.key.decode("utf-8", "replace") for r in records]
        elif name in ("partition", "offset", "timestamp"):
            values = [getattr(r, name) for r in records]
            if name == "timestamp":
                return pc.cast(pa.array(values, pa.int64()), pa.timestamp("ms", tz="UTC"))
        else:
            header = _HEADERS.get(name or "", f"ce_{name}")
            values = [_header(r, header) for r in records]
        array = pa.array(values)
        target = ARROW_TYPES[column.type]
        if pa.types.is_timestamp(target):
            return pc.cast(pc.cast(array, _PARSED_TIME), target, safe=False)
        return array if array.type == target else pc.cast(array, target, safe=False)


def _header(record: Record, name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None


def _parsed_type(column: Column) -> pa.DataType:
    target = ARROW_TYPES[column.type]
    return _PARSED_TIME if pa.types.is_timestamp(target) else target


def _held(values: Any, column: Column) -> Any:
    target = ARROW_TYPES[column.type]
    return values if values.type == target else pc.cast(values, target, safe=False)


# --- the slow path: one event at a time, as lenient as Flink's JSON format -----------------------
def _integer(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    number = int(value) if not isinstance(value, float) or value.is_integer() else None
    if number is None:
        raise ValueError(value)
    return number


def _double(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    return float(value)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _boolean(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(value)


def _timestamp(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise ValueError(value)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "BOOLEAN": _boolean,
    "TINYINT": _integer,
    "SMALLINT": _integer,
    "INT": _integer,
    "BIGINT": _integer,
    "FLOAT": _double,
    "DOUBLE": _double,
    "DECIMAL": _double,
    "STRING": _text,
    "BYTES": lambda value: None if value is None else str(value).encode(),
    "DATE": lambda value: None if value is None else dt.date.fromisoformat(value),
    "TIME": lambda value: None if value is None else dt.time.fromisoformat(value),
    "TIMESTAMP": _timestamp,
    "TIMESTAMP_LTZ": _timestamp,
}
