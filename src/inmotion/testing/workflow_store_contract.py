"""The workflow store's contract (`inmotion.workflows.store.WorkflowRecorder`) as reusable
pytest test cases. A backend's test module subclasses `WorkflowStoreContract` and provides a
`recorder` fixture that yields a fresh, empty recorder:

    class TestSqliteWorkflowStore(WorkflowStoreContract):
        @pytest.fixture
        def recorder(self, tmp_path):
            recorder = open_workflow_recorder(f"sqlite:///{tmp_path}/store.db")
            yield recorder
            recorder.close()

An instance is created once per key; a write lands only on the version it expects, all of its
entries or none, and a batch writes every change whose instance is at its expected version.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inmotion.errors import Closed
from inmotion.testing.properties import on_a_backend
from inmotion.workflows.store import ACTIVE, Change, Instance, NewEntry, WorkflowRecorder


def instance(key: str, *, shard: int = 0, correlation: str = "c", created_ms: int = 1000) -> Instance:
    workflow, _, id = key.partition("/")
    return Instance(key, workflow, id, correlation, shard, "running", b'{"n":1}', 1, created_ms, created_ms)


STARTED = [NewEntry("started", 0, "", b'{"input":{"n":1}}')]


class WorkflowStoreContract:
    """Every workflow store backend passes these. Subclasses provide the `recorder` fixture."""

    def test_an_instance_is_created_once_per_key(self, recorder: WorkflowRecorder) -> None:
        first = instance("order/1")
        assert recorder.create(first, STARTED) == first
        again = recorder.create(instance("order/1", correlation="other"), STARTED)
        assert again.correlation == "c"
        found = recorder.load("order/1")
        assert found is not None
        stored, entries = found
        assert stored == first
        assert [(e.version, e.kind) for e in entries] == [(1, "started")]
        assert recorder.load("order/2") is None

    def test_a_write_lands_on_the_version_it_expects_and_nowhere_else(self, recorder: WorkflowRecorder) -> None:
        recorder.create(instance("order/1"), STARTED)
        step = NewEntry("step", 1, "reserve", b'{"result":1}')
        assert recorder.write([Change("order/1", 1, [step], "running", at_ms=2000)]) == set()
        assert recorder.write([Change("order/1", 1, [step], "running", at_ms=2001)]) == {"order/1"}
        assert recorder.write([Change("order/9", 0, [step], "running")]) == {"order/9"}
        found = recorder.load("order/1")
        assert found is not None
        stored, entries = found
        assert (stored.version, stored.updated_ms) == (2, 2000)
        assert [(e.version, e.kind, e.seq, e.name, e.recorded_ms) for e in entries[1:]] == [
            (2, "step", 1, "reserve", 2000)
        ]

    def test_a_batch_writes_every_change_at_its_version_and_none_of_a_conflicting_one(
        self, recorder: WorkflowRecorder
    ) -> None:
        for key in ("a/1", "a/2", "a/3"):
            recorder.create(instance(key), STARTED)
        two = [NewEntry("sleep", 1, "", b'{"due":5000}'), NewEntry("slept", 1, "", b"{}")]
        conflicts = recorder.write(
            [
                Change("a/1", 1, two, "sleeping", wake_ms=5000),
                Change("a/2", 7, two, "running"),
                Change("a/3", 1, [NewEntry("completed")], "completed", result=b'"done"'),
            ]
        )
        assert conflicts == {"a/2"}
        versions = {key: found[0].version for key in ("a/1", "a/2", "a/3") if (found := recorder.load(key))}
        assert versions == {"a/1": 3, "a/2": 1, "a/3": 2}
        done = recorder.load("a/3")
        assert done is not None
        assert (done[0].status, done[0].result) == ("completed", b'"done"')
        sleeping = recorder.load("a/1")
        assert sleeping is not None
        assert (sleeping[0].status, sleeping[0].wake_ms) == ("sleeping", 5000)

    def test_instances_are_found_by_status_shard_and_correlation_oldest_first(self, recorder: WorkflowRecorder) -> None:
        recorder.create(instance("w/late", shard=1, created_ms=3000), STARTED)
        recorder.create(instance("w/early", shard=1, correlation="x", created_ms=1000), STARTED)
        recorder.create(instance("w/other", shard=2, correlation="x", created_ms=2000), STARTED)
        recorder.write([Change("w/other", 1, [NewEntry("completed")], "completed")])
        assert [i.key for i in recorder.instances()] == ["w/early", "w/other", "w/late"]
        assert [i.key for i in recorder.instances(statuses=ACTIVE, shard=1)] == ["w/early", "w/late"]
        assert [i.key for i in recorder.instances(correlation="x")] == ["w/early", "w/other"]
        assert [i.key for i in recorder.instances(statuses=("completed",))] == ["w/other"]
        assert [i.key for i in recorder.instances(limit=1)] == ["w/early"]
        assert recorder.count(statuses=ACTIVE, shard=1) == 2
        assert recorder.count(statuses=ACTIVE, shard=2) == 0

    def test_writes_without_waiting_do_what_writes_do_or_nothing(self, recorder: WorkflowRecorder) -> None:
        created = recorder.create_now(instance("n/1"), STARTED)
        if created is None:  # this backend always waits: nothing was written
            assert recorder.load("n/1") is None
            return
        assert recorder.write_now([Change("n/1", 1, [NewEntry("completed")], "completed")]) == set()
        assert recorder.write_now([Change("n/1", 1, [NewEntry("completed")], "completed")]) == {"n/1"}

    def test_concurrent_writers_of_one_instance_each_win_a_version_once(self, recorder: WorkflowRecorder) -> None:
        recorder.create(instance("race/1"), STARTED)
        won: list[int] = []
        lock = threading.Lock()

        def writer(name: str) -> None:
            for _ in range(20):
                found = recorder.load("race/1")
                assert found is not None
                version = found[0].version
                if not recorder.write([Change("race/1", version, [NewEntry("received", 0, name)], "running")]):
                    with lock:
                        won.append(version)

        threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b", "c")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        found = recorder.load("race/1")
        assert found is not None
        assert sorted(won) == list(range(1, found[0].version))
        assert [e.version for e in found[1]] == list(range(1, found[0].version + 1))

    @on_a_backend(max_examples=25)
    @given(st.lists(st.lists(st.sampled_from(["step", "received", "sleep"]), min_size=1, max_size=4), max_size=8))
    def test_a_history_reads_back_as_written(self, recorder: WorkflowRecorder, writes: list[list[str]]) -> None:
        key = f"prop/{uuid.uuid4().hex}"  # the fixture's store outlives each example
        recorder.create(instance(key), STARTED)
        expected = ["started"]
        version = 1
        for kinds in writes:
            entries = [NewEntry(kind, n, kind, b"{}") for n, kind in enumerate(kinds)]
            assert recorder.write([Change(key, version, entries, "running")]) == set()
            version += len(entries)
            expected += kinds
        found = recorder.load(key)
        assert found is not None
        assert [e.kind for e in found[1]] == expected
        assert found[0].version == len(expected)

    def test_a_closed_store_refuses_work(self, recorder: WorkflowRecorder) -> None:
        recorder.close()
        with pytest.raises(Closed):
            recorder.load("order/1")
