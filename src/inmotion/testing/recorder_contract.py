"""The event store's recorder contract as reusable pytest test cases.

A backend's test module subclasses `RecorderContract` and provides a `recorder` fixture that
yields a fresh, empty `Recorder` (`inmotion.sourcing.store`), the storage behind `EventStore`:

    class TestSqliteRecorder(RecorderContract):
        @pytest.fixture
        def recorder(self, tmp_path):
            with EventStore(f"sqlite:///{tmp_path}/store.db") as store:
                yield store.recorder

Versions in a stream start at 1, positions over all streams start at 1 and have no gaps; an
append writes all its events (and its snapshot) or, on a version conflict, nothing.
"""

from __future__ import annotations

import threading
import time
import uuid

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inmotion.errors import Closed, ConcurrencyError
from inmotion.sourcing.store import EncodedEvent, Recorder, StoredEvent, new_event_id
from inmotion.testing.properties import on_a_backend


def counted(*numbers: int) -> list[EncodedEvent]:
    """Events whose payloads say their number."""
    return [EncodedEvent("Counted", 1, new_event_id(), msgspec.json.encode({"n": n})) for n in numbers]


def numbers(events: list[StoredEvent]) -> list[int]:
    return [msgspec.json.decode(e.payload)["n"] for e in events]


class RecorderContract:
    """Every event store backend passes these. Subclasses provide the `recorder` fixture."""

    # --- appending and reading ------------------------------------------------------------
    def test_versions_start_at_1_and_positions_run_over_all_streams(self, recorder: Recorder) -> None:
        assert recorder.append("a", counted(1, 2), 0, None) == 2
        assert recorder.append("b", counted(3), 0, None) == 1
        assert recorder.append("a", counted(4), 2, None) == 3
        a = recorder.read_stream("a", 1, None)
        assert [(e.stream_id, e.version, e.position) for e in a] == [("a", 1, 1), ("a", 2, 2), ("a", 3, 4)]
        assert numbers(a) == [1, 2, 4]
        assert [(e.stream_id, e.position) for e in recorder.read_all(1, 100)] == [
            ("a", 1),
            ("a", 2),
            ("b", 3),
            ("a", 4),
        ]
        assert recorder.last_position() == 4
        assert recorder.stream_version("a") == 3
        assert recorder.stream_version("nobody") == 0
        assert recorder.read_stream("nobody", 1, None) == []

    def test_stored_events_keep_what_was_appended(self, recorder: Recorder) -> None:
        before = int(time.time() * 1000)
        recorder.append("s", [EncodedEvent("Renamed", 2, "event-1", b'{"to":"x"}')], 0, None)
        (event,) = recorder.read_stream("s", 1, None)
        assert (event.type, event.schema_version, event.id, event.payload) == ("Renamed", 2, "event-1", b'{"to":"x"}')
        assert before - 1000 <= event.recorded_ms <= int(time.time() * 1000) + 1000
        assert recorder.read_all(1, 1) == [event]

    def test_read_a_stream_from_and_to_a_version(self, recorder: Recorder) -> None:
        recorder.append("s", counted(*range(1, 11)), 0, None)
        assert [e.version for e in recorder.read_stream("s", 8, None)] == [8, 9, 10]
        assert [e.version for e in recorder.read_stream("s", 3, 5)] == [3, 4, 5]
        assert recorder.read_stream("s", 11, None) == []

    def test_read_all_pages_in_order(self, recorder: Recorder) -> None:
        for i in range(5):
            recorder.append(f"s{i}", counted(i, i), 0, None)
        pages = [recorder.read_all(start, 3) for start in (1, 4, 7, 10, 11)]
        assert [[e.position for e in page] for page in pages] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10], []]

    def test_big_batches_are_written_whole(self, recorder: Recorder) -> None:
        assert recorder.append("s", counted(*range(250)), 0, None) == 250
        assert numbers(recorder.read_stream("s", 1, None)) == list(range(250))
        assert [e.position for e in recorder.read_all(1, 1000)] == list(range(1, 251))

    # --- optimistic concurrency -----------------------------------------------------------
    def test_a_conflict_raises_and_writes_nothing(self, recorder: Recorder) -> None:
        recorder.append("s", counted(1), 0, None)
        with pytest.raises(ConcurrencyError, match="at version 1, not the expected 0"):
            recorder.append("s", counted(2, 3), 0, None)
        with pytest.raises(ConcurrencyError):
            recorder.append("s", counted(2, 3), 2, None)
        with pytest.raises(ConcurrencyError):
            recorder.append("new", counted(2), 1, None)
        assert numbers(recorder.read_stream("s", 1, None)) == [1]
        assert recorder.last_position() == 1
        assert recorder.stream_version("new") == 0

    def test_an_empty_append_only_checks_the_version(self, recorder: Recorder) -> None:
        assert recorder.append("s", [], 0, None) == 0
        recorder.append("s", counted(1), 0, None)
        assert recorder.append("s", [], 1, None) == 1
        with pytest.raises(ConcurrencyError):
            recorder.append("s", [], 0, None)
        assert recorder.last_position() == 1

    def test_concurrent_writers_of_one_stream_each_win_a_version_once(self, recorder: Recorder) -> None:
        conflicts = [0] * 4

        def write(writer: int) -> None:
            written = 0
            while written < 10:
                version = recorder.stream_version("s")
                try:
                    recorder.append("s", counted(writer * 100 + written), version, None)
                    written += 1
                except ConcurrencyError:
                    conflicts[writer] += 1

        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stream = recorder.read_stream("s", 1, None)
        assert [e.version for e in stream] == list(range(1, 41))
        assert [e.position for e in recorder.read_all(1, 100)] == list(range(1, 41))
        for writer in range(4):
            assert [n for n in numbers(stream) if n // 100 == writer] == [writer * 100 + i for i in range(10)]

    # --- snapshots ------------------------------------------------------------------------
    def test_a_snapshot_is_written_with_the_append(self, recorder: Recorder) -> None:
        recorder.append("s", counted(1, 2), 0, ("Counter", 2, b'{"total":3}'))
        snapshot = recorder.load_snapshot("s")
        assert snapshot is not None
        assert (snapshot.stream_id, snapshot.version, snapshot.type, snapshot.schema_version, snapshot.payload) == (
            "s",
            2,
            "Counter",
            2,
            b'{"total":3}',
        )
        with pytest.raises(ConcurrencyError):
            recorder.append("s", counted(3), 0, ("Counter", 1, b'{"total":6}'))
        assert recorder.load_snapshot("s") == snapshot
        recorder.append("s", counted(3), 2, None)
        assert recorder.load_snapshot("s") == snapshot  # the newest snapshot, not the newest version
        recorder.append("s", counted(4), 3, ("Counter", 1, b'{"total":10}'))
        newer = recorder.load_snapshot("s")
        assert newer is not None
        assert (newer.version, newer.payload) == (4, b'{"total":10}')
        assert recorder.load_snapshot("t") is None

    # --- cursors --------------------------------------------------------------------------
    def test_cursors_are_kept_by_name(self, recorder: Recorder) -> None:
        assert recorder.cursor("relay") == 0
        recorder.save_cursor("relay", 7)
        recorder.save_cursor("other", 2)
        assert recorder.cursor("relay") == 7
        recorder.save_cursor("relay", 9)
        assert (recorder.cursor("relay"), recorder.cursor("other")) == (9, 2)

    # --- waiting --------------------------------------------------------------------------
    def test_wait_wakes_on_an_append_and_times_out_otherwise(self, recorder: Recorder) -> None:
        assert recorder.wait(0, timeout=0.01) is False
        started = threading.Event()

        def append_later() -> None:
            started.wait()
            recorder.append("s", counted(1), 0, None)

        thread = threading.Thread(target=append_later)
        thread.start()
        started.set()
        assert recorder.wait(0, timeout=30) is True
        thread.join()
        assert recorder.wait(0, timeout=0.01) is True
        assert recorder.wait(1, timeout=0.01) is False

    # --- closing --------------------------------------------------------------------------
    def test_a_closed_recorder_refuses_everything(self, recorder: Recorder) -> None:
        recorder.append("s", counted(1), 0, ("Counter", 1, b"{}"))
        recorder.close()
        for call in (
            lambda: recorder.append("s", counted(2), 1, None),
            lambda: recorder.read_stream("s", 1, None),
            lambda: recorder.read_all(1, 10),
            lambda: recorder.stream_version("s"),
            lambda: recorder.last_position(),
            lambda: recorder.load_snapshot("s"),
            lambda: recorder.cursor("relay"),
            lambda: recorder.save_cursor("relay", 1),
        ):
            with pytest.raises(Closed):
                call()
        recorder.close()  # twice is fine

    # --- invariants, against a model ------------------------------------------------------
    @on_a_backend(max_examples=30)
    @given(
        operations=st.lists(
            st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3), st.integers(-1, 1)), max_size=25
        )
    )
    def test_versions_and_positions_follow_a_model(
        self, recorder: Recorder, operations: list[tuple[str, int, int]]
    ) -> None:
        """Appends with right and wrong expected versions; the recorder is shared by the
        examples, so each uses streams of its own and counts positions from where it starts."""
        prefix = uuid.uuid4().hex[:8]
        start = recorder.last_position()
        model: dict[str, list[int]] = {}
        appended: list[tuple[str, int]] = []
        for name, count, skew in operations:
            stream = f"{prefix}-{name}"
            current = len(model.get(stream, []))
            expected = max(current + skew, 0)
            batch = list(range(len(appended), len(appended) + count))
            if expected != current:
                with pytest.raises(ConcurrencyError):
                    recorder.append(stream, counted(*batch), expected, None)
                continue
            assert recorder.append(stream, counted(*batch), expected, None) == current + count
            model.setdefault(stream, []).extend(batch)
            appended.extend((stream, n) for n in batch)
        everything = recorder.read_all(start + 1, 10_000)
        assert [e.position for e in everything] == list(range(start + 1, start + len(appended) + 1))
        assert list(zip([e.stream_id for e in everything], numbers(everything), strict=True)) == appended
        for stream, written in model.items():
            stored = recorder.read_stream(stream, 1, None)
            assert [e.version for e in stored] == list(range(1, len(written) + 1))
            assert numbers(stored) == written
