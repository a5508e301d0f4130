"""What every `inmotion` command shares: the broker option, parsing of sizes and times,
and one way to fail (one clear line on stderr, a non-zero exit)."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from typing import Annotated, NoReturn

import msgspec
import typer

from inmotion.errors import InmotionError, InvalidConfig, UnknownTopic
from inmotion.events.codec import RFC3339
from inmotion.log import Log, connect, default_broker

BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        "-b",
        help="Broker URL: sqlite:///path.db, memory:// or kafka://host:port. "
        "Default: $INMOTION_BROKER, else sqlite:///./inmotion.db",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_SIZE = re.compile(r"(\d+)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib|k|m|g|t)?", re.IGNORECASE)
_SIZE_FACTOR = {
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

json_encoder = msgspec.json.Encoder()
LARGEST = 2**63 - 1
"""The largest offset, size or time in milliseconds that the logs store (a signed 64-bit integer)."""


def open_log(broker: str | None, *, create: bool = True) -> Log:
    """The log `--broker` names; with `create=False` (commands that only look) a SQLite file
    that does not exist is an error instead of a new, empty log."""
    return connect(broker or default_broker(), create=create)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def explain(error: InmotionError) -> str:
    """The error's message, with a hint where there is an obvious next step."""
    if isinstance(error, UnknownTopic):
        return f"{error} (create it with: inmotion topics create {error.topic})"
    return str(error)


def print_json(document: object) -> None:
    sys.stdout.write(json_encoder.encode(document).decode() + "\n")


def parse_duration_ms(text: str) -> int:
    """'500ms', '30s', '15m', '12h', '7d', '2w' as milliseconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise InvalidConfig(f"invalid duration {text!r}: use a number and a unit (ms, s, m, h, d, w), e.g. 7d")
    value = int(float(match.group(1)) * _DURATION_MS[match.group(2)])
    if not 0 < value <= LARGEST:
        raise InvalidConfig(f"duration must be positive and at most {LARGEST} ms, got {text!r}")
    return value


def parse_size(text: str) -> int:
    """'1048576', '100MB', '1GiB' as bytes."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise InvalidConfig(f"invalid size {text!r}: use bytes or a unit (KB, MB, GB, KiB, MiB, GiB), e.g. 100MB")
    value = int(match.group(1)) * _SIZE_FACTOR[(match.group(2) or "b").lower()]
    if not 0 < value <= LARGEST:
        raise InvalidConfig(f"size must be positive and at most {LARGEST} bytes, got {text!r}")
    return value


def check_offset(offset: int, option: str = "--offset") -> int:
    if not 0 <= offset <= LARGEST:
        fail(f"{option} must be between 0 and {LARGEST}, got {offset}", code=2)
    return offset


def parse_time_ms(text: str, now: datetime | None = None) -> int:
    """An RFC 3339 time (UTC when it names no zone) or a duration ago ('10m') in epoch ms."""
    now = now or datetime.now(UTC)
    if _DURATION.fullmatch(text.strip().lower()):
        return int(now.timestamp() * 1000) - parse_duration_ms(text)
    try:
        if not RFC3339.fullmatch(text.strip()):
            raise ValueError(text)
        moment = datetime.fromisoformat(text.strip().upper())
    except ValueError:
        raise InvalidConfig(
            f"invalid time {text!r}: use RFC 3339 (2026-11-26T09:30:00Z) or a duration ago (10m, 2h, 1d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
