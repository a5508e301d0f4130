"""`memory://`: SQL jobs' checkpoints in this process's memory, for tests; same rules as SQLite
(a checkpoint and its results under one lock, epochs fence out an older run)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import weakref
from collections.abc import Mapping, Sequence

from inmotion.errors import InvalidConfig, TopicExists
from inmotion.log import Message, TopicConfig
from inmotion.log.memory.log import MemoryLog
from inmotion.streams.checkpoints import Checkpoint, Checkpoints, JobInfo, JobTakenOver, Source


@dataclasses.dataclass
class _Job:
    script: str
    info: JobInfo
    state: dict[tuple[int, bytes], bytes]


_STORES: weakref.WeakKeyDictionary[MemoryLog, MemoryCheckpoints] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def checkpoints_of(log: MemoryLog) -> MemoryCheckpoints:
    """The checkpoints of jobs on `log`: one store per log, as a file holds them on SQLite."""
    with _STORES_LOCK:
        store = _STORES.get(log)
        if store is None:
            store = _STORES[log] = MemoryCheckpoints(log)
        return store


class MemoryCheckpoints(Checkpoints):
    def __init__(self, log: MemoryLog) -> None:
        self.log = log
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def claim(self, job: str, script: str, owner: str) -> Checkpoint:
        with self._lock:
            known = self._jobs.get(job)
            if known is None:
                info = JobInfo(job, "running", owner, 1, 0, _now_ms(), b"", {})
                self._jobs[job] = _Job(script, info, {})
                return Checkpoint(1, 0, {}, b"", {})
            if known.script != script:
                raise InvalidConfig(f"job {job} ran other SQL before: its state does not fit this SQL")
            known.info = dataclasses.replace(
                known.info, epoch=known.info.epoch + 1, owner=owner, status="running", error=None
            )
            positions = {tracker: offsets for tracker, (_, offsets) in known.info.positions.items()}
            return Checkpoint(known.info.epoch, known.info.sequence, positions, known.info.progress, dict(known.state))

    def save(
        self,
        job: str,
        epoch: int,
        sequence: int,
        sources: Sequence[Source],
        state: Mapping[tuple[int, bytes], bytes | None],
        progress: bytes,
        results: Sequence[tuple[str, Sequence[Message], TopicConfig]],
    ) -> None:
        with self._lock:
            known = self._jobs.get(job)
            if known is None or known.info.epoch != epoch:
                raise JobTakenOver(f"job {job} was started again by another process: this run stops")
            for topic, messages, config in results:
                if messages:
                    if topic not in self.log.list_topics():
                        with contextlib.suppress(TopicExists):
                            self.log.create_topic(topic, config)
                    self.log.append(topic, messages)
            for key, value in state.items():
                if value is None:
                    known.state.pop(key, None)
                else:
                    known.state[key] = value
            positions = dict(known.info.positions)
            for source in sources:
                positions[source.tracker] = (source.topic, dict(source.offsets))
            known.info = dataclasses.replace(
                known.info, sequence=sequence, progress=progress, positions=positions, updated_ms=_now_ms()
            )

    def finish(self, job: str, epoch: int, status: str, error: str | None = None) -> None:
        with self._lock:
            known = self._jobs.get(job)
            if known is not None and known.info.epoch == epoch:
                known.info = dataclasses.replace(known.info, status=status, error=error, updated_ms=_now_ms())

    def jobs(self) -> list[JobInfo]:
        with self._lock:
            return [self._jobs[name].info for name in sorted(self._jobs)]

    def reset(self, job: str) -> bool:
        with self._lock:
            return self._jobs.pop(job, None) is not None


def _now_ms() -> int:
    return int(time.time() * 1000)
