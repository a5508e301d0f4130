from tests.chaos.check import Handled, check, summary


def effects(*pairs: tuple[str, int]) -> list[Handled]:
    return [Handled(key, seq) for key, seq in pairs]


def test_a_clean_run_with_plain_redeliveries_is_no_violation() -> None:
    acked = [("a", 0), ("a", 1), ("b", 0)]
    report = check(
        acked,
        {
            "plain": ("plain", effects(("a", 0), ("b", 0), ("a", 0), ("a", 1))),
            "tx": ("transactional", effects(("a", 0), ("a", 1), ("b", 0))),
        },
    )
    assert (report.lost, report.duplicates["plain"], report.order, report.violated) == (0, 1, 0, False)


def test_each_violation_of_a_made_up_run_is_reported() -> None:
    acked = [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    report = check(
        acked,
        {
            # b/0 never handled; a/1 handled twice in a transaction; a/2 before a/1
            "tx": ("transactional", effects(("a", 0), ("a", 2), ("a", 1), ("a", 1))),
        },
        progress=[(0.0, 1, 3), (1.0, 1, 3), (5.0, 1, 3), (6.0, 4, 0)],
        stall_after=4.0,
    )
    assert (report.lost, report.duplicates["transactional"], report.order, report.stalls) == (1, 1, 1, 1)
    assert report.violated
    assert summary(report, "1s sqlite seed=1", kills=0, stops=0) == (
        "chaos: 1s sqlite seed=1 kills=0 stops=0 crashes=0 acknowledged=4 lost=1 dup(plain)=0 dup(idempotent)=0"
        " dup(transactional)=1 dup(routed)=0 order=1 stalls=1"
    )


def test_a_router_target_may_get_an_event_twice_but_must_get_each_in_key_order() -> None:
    acked = [("a", 0), ("a", 1), ("b", 0)]
    redelivered = check(acked, {"router->http": ("routed", effects(("a", 0), ("a", 1), ("a", 0), ("a", 1), ("b", 0)))})
    assert (redelivered.duplicates["routed"], redelivered.violated) == (2, False)
    broken = check(acked, {"router->topic": ("routed", effects(("a", 1), ("a", 0)))})
    assert (broken.lost, broken.order, broken.violated) == (1, 1, True)
    assert broken.details == ["router->topic: key a seq 0 after 1", "router->topic: lost key b seq 0"]


def test_time_a_process_was_held_stopped_does_not_count_towards_a_stall() -> None:
    """A process stopped while it held SQLite's write lock holds up every writer for as long."""
    acked = [("a", 0)]
    handled = {"plain": ("plain", effects(("a", 0)))}
    progress = [(0.0, 0, 1), (6.0, 0, 1), (7.0, 1, 0)]
    assert check(acked, handled, progress, stall_after=4.0).stalls == 1
    assert check(acked, handled, progress, stall_after=4.0, paused=[(1.0, 4.0)]).stalls == 0
    assert check(acked, handled, progress, stall_after=4.0, paused=[(5.0, 6.5)]).stalls == 1
