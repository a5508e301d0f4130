"""Metrics reports: a process that runs an app (`inmotion run`, `inmotion route`) appends a
snapshot of its counters to the compacted topic `inmotion.metrics` every few seconds, keyed by
the process, so that one scrape of the gateway's /metrics covers every process on the log (a
router's matches and deliveries, an app's consumed and failed events) without scraping each.
Compaction keeps each process's newest report (one small record per process that ever ran);
those of processes silent for `STALE_AFTER` seconds are left out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import msgspec

from inmotion.errors import InmotionError, TopicExists, UnknownTopic
from inmotion.log import Log, Message, TopicConfig
from inmotion.log.scan import NewestByKey
from inmotion.runtime.app import App
from inmotion.runtime.metrics import Series

METRICS_TOPIC = "inmotion.metrics"
REPORT_EVERY = 5.0
STALE_AFTER = 60.0
_TOPIC = TopicConfig(partitions=1, compact=True)

logger = logging.getLogger("inmotion.runtime")


class Report(msgspec.Struct, frozen=True):
    instance: str
    """The reporting process: `app@host:pid`."""
    at: float
    """When it was taken (seconds since the epoch, on the app's clock)."""
    series: list[Series]


def reporter(app: App, every: float = REPORT_EVERY) -> Callable[[], Awaitable[None]]:
    """A background task for `app.task`: report at start, every `every` seconds, and at shutdown."""
    instance = f"{app.name}@{socket.gethostname()}:{os.getpid()}"

    def append() -> None:
        report = Report(instance, app.clock.time(), app.metrics.series())
        app.log.append(METRICS_TOPIC, [Message(msgspec.json.encode(report), instance.encode())])

    async def report() -> None:
        await asyncio.to_thread(_ensure_topic, app.log)
        try:
            while True:
                try:
                    await asyncio.to_thread(append)
                except InmotionError as exc:  # the log away for a while: the next report says it all
                    logger.warning("reporting metrics to %s failed: %s", METRICS_TOPIC, exc)
                await app.clock.sleep(every)
        finally:
            with contextlib.suppress(InmotionError):
                append()  # the final counts, at shutdown

    return report


def _ensure_topic(log: Log) -> None:
    if METRICS_TOPIC not in log.list_topics():
        with contextlib.suppress(TopicExists):
            log.create_topic(METRICS_TOPIC, _TOPIC)


class Reports:
    """The reports on the log, read on from where the last look stopped."""

    def __init__(self, log: Log, stale_after: float = STALE_AFTER) -> None:
        self.stale_after = stale_after
        self._newest = NewestByKey(log, METRICS_TOPIC)

    def fresh(self, now: float) -> list[Report]:
        """The newest report of each process that reported within `stale_after` seconds of `now`."""
        try:
            records = self._newest.read()
        except UnknownTopic:  # nothing ever reported
            return []
        found = []
        for record in records.values():
            if record.value is None:
                continue
            try:
                report = msgspec.json.decode(record.value, type=Report)
            except msgspec.DecodeError:  # written by something else: not ours to show
                continue
            if now - report.at <= self.stale_after:
                found.append(report)
        return sorted(found, key=lambda report: report.instance)
