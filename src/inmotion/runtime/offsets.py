"""Which offset of a partition a consumer may commit: the contiguous finished prefix."""

from __future__ import annotations

import collections


class OffsetTracker:
    """Offsets handed out in increasing order and finished in any order.

    `commit_point()` is the lowest offset not yet finished (or the next offset to hand out
    when everything is finished), so a commit never passes an unfinished event.
    """

    def __init__(self, start: int) -> None:
        self.next_offset = start
        self._unfinished: collections.deque[int] = collections.deque()
        self._finished: set[int] = set()

    def __len__(self) -> int:
        """How many handed-out offsets are not yet below the commit point."""
        return len(self._unfinished)

    def start(self, offset: int) -> None:
        if offset < self.next_offset:
            raise ValueError(f"offset {offset} was already handed out (next is {self.next_offset})")
        self._unfinished.append(offset)
        self.next_offset = offset + 1

    def start_many(self, offsets: list[int]) -> None:
        """`start` each of `offsets` (increasing), in one call."""
        if offsets:
            if offsets[0] < self.next_offset:
                raise ValueError(f"offset {offsets[0]} was already handed out (next is {self.next_offset})")
            self._unfinished.extend(offsets)
            self.next_offset = offsets[-1] + 1

    def finish(self, offset: int) -> int:
        """Mark `offset` finished; returns how many handed-out offsets are still below the
        commit point (`len(self)`)."""
        unfinished = self._unfinished
        if not self._finished and unfinished and unfinished[0] == offset:  # the oldest, as in order
            unfinished.popleft()
            return len(unfinished)
        self._finished.add(offset)
        while unfinished and unfinished[0] in self._finished:
            self._finished.discard(unfinished.popleft())
        return len(unfinished)

    def commit_point(self, finishing: int | None = None) -> int:
        """The next offset to read once everything finished so far (and `finishing`) is done."""
        for offset in self._unfinished:
            if offset != finishing and offset not in self._finished:
                return offset
        return self.next_offset
