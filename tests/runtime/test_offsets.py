"""The commit point never passes an unfinished offset (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inmotion.runtime.offsets import OffsetTracker


@given(
    start=st.integers(0, 1000),
    gaps=st.lists(st.integers(0, 3), min_size=1, max_size=60),
    at_once=st.booleans(),
    data=st.data(),
)
def test_the_commit_point_is_the_lowest_unfinished_offset(
    start: int, gaps: list[int], at_once: bool, data: st.DataObject
) -> None:
    tracker = OffsetTracker(start)
    offsets = []
    offset = start
    for gap in gaps:  # retention or compaction can leave holes between offsets
        offset += gap
        if not at_once:
            tracker.start(offset)
        offsets.append(offset)
        offset += 1
    if at_once:
        tracker.start_many(offsets)
    order = data.draw(st.permutations(offsets))
    finished: set[int] = set()
    for done in order[: data.draw(st.integers(0, len(order)))]:
        assert tracker.commit_point(finishing=done) == min(
            [o for o in offsets if o not in finished and o != done], default=offsets[-1] + 1
        )
        left = tracker.finish(done)
        finished.add(done)
        unfinished = [o for o in offsets if o not in finished]
        point = tracker.commit_point()
        assert point == (min(unfinished) if unfinished else offsets[-1] + 1)
        assert all(o >= point for o in unfinished)
        assert left == len(tracker) == len([o for o in offsets if o >= point])


def test_offsets_are_handed_out_in_order() -> None:
    tracker = OffsetTracker(5)
    tracker.start(5)
    with pytest.raises(ValueError, match="already handed out"):
        tracker.start(5)
    with pytest.raises(ValueError, match="already handed out"):
        tracker.start_many([5, 6])
    assert tracker.commit_point() == 5
    tracker.finish(5)
    assert tracker.commit_point() == 6
