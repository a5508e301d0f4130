"""The embedded engine over real logs: expressions with Flink's semantics, window aggregations
checked against a plain-Python reference, late and malformed events, unsupported SQL."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmotion.clock import FakeClock
from inmotion.errors import InvalidSql
from inmotion.events import Event
from inmotion.log import Log, Message, connect
from inmotion.streams.job import Job, job_results

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
READINGS = """
CREATE TABLE readings (
  sensor STRING,
  temp DOUBLE,
  level BIGINT,
  ts TIMESTAMP_LTZ(3),
  `type` STRING METADATA VIRTUAL,
  `key` STRING METADATA VIRTUAL,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('topic' = 'readings');
"""


def reading(ms: int, sensor: str = "s1", temp: float | None = 20.0, level: int | None = 1) -> Event:
    data = {"sensor": sensor, "temp": temp, "level": level, "ts": (T0 + timedelta(milliseconds=ms)).isoformat()}
    return Event(type="reading", source="/sensors", data=data, extensions={"partitionkey": sensor})


@pytest.fixture
def log() -> Iterator[Log]:
    with connect("memory://") as log:
        log.create_topic("readings")
        yield log


def rows(log: Log, select: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _, table in Job(log, READINGS + select).query():
        found.extend(job_results(table))
    return found


def ms(value: datetime) -> int:
    return (value - T0) // timedelta(milliseconds=1)


def test_projection_and_filter_follow_flinks_semantics(log: Log) -> None:
    log.append_events("readings", [reading(0, "a", 21.5, 7), reading(1, "b", None, -7), reading(2, "c", 30.0, None)])
    found = rows(
        log,
        "SELECT sensor, level / 2 AS half, MOD(level, 4) AS m, temp + 1 AS warmer, UPPER(sensor) AS up,"
        " CASE WHEN temp > 25 THEN 'hot' WHEN temp IS NULL THEN 'unknown' ELSE 'ok' END AS feel,"
        " CAST(level AS STRING) AS text, COALESCE(level, 0) AS filled, `type`, `key`,"
        " CONCAT(sensor, '-', `key`) AS both"
        " FROM readings WHERE sensor LIKE '_' AND (level IS NULL OR level <> 3)",
    )
    assert found == [
        {"sensor": "a", "half": 3, "m": 3, "warmer": 22.5, "up": "A", "feel": "ok", "text": "7", "filled": 7,
         "type": "reading", "key": "a", "both": "a-a"},
        {"sensor": "b", "half": -3, "m": -3, "warmer": None, "up": "B", "feel": "unknown", "text": "-7", "filled": -7,
         "type": "reading", "key": "b", "both": "b-b"},
        {"sensor": "c", "half": None, "m": None, "warmer": 31.0, "up": "C", "feel": "hot", "text": None, "filled": 0,
         "type": "reading", "key": "c", "both": "c-c"},
    ]  # fmt: skip


def test_where_keeps_only_rows_whose_condition_is_true_not_null(log: Log) -> None:
    log.append_events("readings", [reading(0, "a", None), reading(1, "b", 5.0), reading(2, "c", 50.0)])
    assert rows(log, "SELECT sensor FROM readings WHERE temp > 10 OR temp < 0") == [{"sensor": "c"}]
    assert rows(log, "SELECT sensor FROM readings WHERE NOT (temp > 10)") == [{"sensor": "b"}]
    assert rows(log, "SELECT sensor FROM readings WHERE sensor IN ('a', 'c')") == [{"sensor": "a"}, {"sensor": "c"}]


def test_select_star_names_every_column_and_duplicates_get_numbers(log: Log) -> None:
    log.append_events("readings", [reading(0, "a", 1.0, 2)])
    [row] = rows(log, "SELECT *, sensor, 1 FROM readings")
    assert list(row) == ["sensor", "temp", "level", "ts", "type", "key", "sensor0", "EXPR$7"]
    assert row["ts"] == T0
    assert row["EXPR$7"] == 1


def reference(
    kind: str, times: Sequence[tuple[int, str, int]], size: int, step: int
) -> dict[tuple[int, int, str], tuple[int, int, int, int | None]]:
    """(window start, end, sensor) -> (count, sum of level, distinct levels, sum of the positive
    levels or None), computed one event at a time."""
    found: dict[tuple[int, int, str], list[Any]] = defaultdict(lambda: [0, 0, set(), None])
    for t, sensor, level in times:
        if kind == "TUMBLE":
            windows = [(t - t % size, t - t % size + size)]
        elif kind == "HOP":
            last = t - t % step
            windows = [(s, s + size) for s in range(last - size + step, last + 1, step)]
        else:
            start = t - t % size
            windows = [(start, end) for end in range(start + step, start + size + 1, step) if end > t]
        for window in windows:
            totals = found[(*window, sensor)]
            totals[0] += 1
            totals[1] += level
            totals[2].add(level)
            if level > 0:
                totals[3] = (totals[3] or 0) + level
    return {key: (n, total, len(levels), positive) for key, (n, total, levels, positive) in found.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["TUMBLE", "HOP", "CUMULATE"]),
    steps=st.lists(st.tuples(st.integers(0, 1500), st.sampled_from("abc"), st.integers(-5, 5)), max_size=60),
    step=st.sampled_from([500, 1000]),
    multiple=st.integers(1, 4),
)
def test_window_aggregates_match_a_reference(
    kind: str, steps: list[tuple[int, str, int]], step: int, multiple: int
) -> None:
    # times only grow: no event is late, so every event counts in each of its windows
    times, t = [], 0
    for gap, sensor, level in steps:
        t += gap
        times.append((t, sensor, level))
    size = step * multiple
    args = (
        f"INTERVAL '{size / 1000:g}' SECOND"
        if kind == "TUMBLE"
        else f"INTERVAL '{step / 1000:g}' SECOND, INTERVAL '{size / 1000:g}' SECOND"
    )
    with connect("memory://") as log:
        log.create_topic(
            "readings",
        )
        log.append_events("readings", [reading(t, sensor, level=level) for t, sensor, level in times])
        found = rows(
            log,
            f"SELECT window_start, window_end, sensor, COUNT(*) AS n, SUM(level) AS total,"
            f" COUNT(DISTINCT level) AS kinds, SUM(level) FILTER (WHERE level > 0) AS positive"
            f" FROM TABLE({kind}(TABLE readings, DESCRIPTOR(ts), {args}))"
            f" GROUP BY window_start, window_end, sensor",
        )
    got = {
        (ms(r["window_start"]), ms(r["window_end"]), r["sensor"]): (r["n"], r["total"], r["kinds"], r["positive"])
        for r in found
    }
    assert len(got) == len(found)
    assert got == reference(kind, times, size, step)


def test_aggregates_skip_nulls_and_avg_of_integers_is_an_integer(log: Log) -> None:
    log.append_events(
        "readings",
        [reading(0, "a", 1.0, 1), reading(1, "a", None, 2), reading(2, "a", 4.0, None), reading(3, "b", None, None)],
    )
    found = rows(
        log,
        "SELECT sensor, COUNT(*) AS n, COUNT(temp) AS temps, SUM(temp) AS s, MIN(level) AS low, MAX(level) AS high,"
        " AVG(level) AS mean, AVG(temp) AS mean_temp"
        " FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '1' MINUTE))"
        " GROUP BY window_start, window_end, sensor",
    )
    assert found == [
        {"sensor": "a", "n": 3, "temps": 2, "s": 5.0, "low": 1, "high": 2, "mean": 1, "mean_temp": 2.5},
        {"sensor": "b", "n": 1, "temps": 0, "s": None, "low": None, "high": None, "mean": None, "mean_temp": None},
    ]


def test_having_and_expressions_over_aggregates_and_keys(log: Log) -> None:
    log.append_events("readings", [reading(i * 100, "a" if i % 3 else "b", level=i) for i in range(10)])
    found = rows(
        log,
        "SELECT UPPER(sensor) AS s, MAX(level) - MIN(level) AS spread, window_end"
        " FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
        " GROUP BY window_start, window_end, sensor HAVING COUNT(*) > 4",
    )
    assert found == [{"s": "A", "spread": 7, "window_end": T0 + timedelta(seconds=1)}]


def test_late_events_are_dropped_and_counted(log: Log) -> None:
    # the watermark is 1 s behind the newest time: 6.5 s closes [0, 5); an event at 4.9 s is then late
    log.append_events("readings", [reading(100), reading(6_500)])
    log.append_events("readings", [reading(4_900), reading(5_200)])
    job = Job(log, READINGS + "SELECT window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE readings,"
              " DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY window_start, window_end")  # fmt: skip
    found = [r for _, table in job.query() for r in job_results(table)]
    assert found == [{"window_start": T0, "n": 1}, {"window_start": T0 + timedelta(seconds=5), "n": 2}]
    assert job.pipelines[0].progress.late == 1


def test_malformed_events_are_left_out_and_counted(log: Log) -> None:
    good = reading(0, "a")
    log.append_events("readings", [good])
    log.append("readings", [Message(b"not json", headers=(("ce_type", b"reading"),))])
    log.append("readings", [Message(b'["a list"]')])
    log.append("readings", [Message(b'{"sensor": "b", "level": "many", "ts": "2026-12-04T10:00:01Z"}')])
    log.append("readings", [Message(b'{"sensor": "c", "level": 3, "ts": 1796378400000}')])  # epoch millis
    log.append("readings", [Message(None)])  # a tombstone: no row, not malformed
    job = Job(log, READINGS + "SELECT sensor, level, ts FROM readings")
    found = [r for _, table in job.query() for r in job_results(table)]
    assert [r["sensor"] for r in found] == ["a", "c"]
    assert found[1]["ts"] == datetime.fromtimestamp(1796378400, UTC)
    assert job.pipelines[0].progress.malformed == 3


@pytest.mark.parametrize(
    ("select", "problem"),
    [
        ("SELECT * FROM readings r JOIN readings s ON r.level > s.level",
         "a join of two streams needs equal keys"),
        ("SELECT * FROM readings r LEFT JOIN readings s ON r.sensor = s.sensor AND r.ts > s.ts", "one way only"),
        ("SELECT * FROM readings r JOIN readings s ON r.ts = s.ts JOIN readings t ON t.ts = s.ts",
         "more than two tables"),
        ("SELECT sensor FROM readings r JOIN readings s ON r.ts = s.ts", "column sensor is ambiguous"),
        ("SELECT sensor FROM readings ORDER BY sensor", "ORDER BY is not supported"),
        ("SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
         " GROUP BY window_start", "a window aggregation groups by window_start and window_end"),
        ("SELECT nope FROM readings", "unknown column nope"),
        ("SELECT sensor FROM nowhere", "unknown table nowhere"),
        ("SELECT DISTINCT sensor FROM readings", "SELECT DISTINCT is not supported"),
        ("SELECT COUNT(DISTINCT sensor, level) FROM readings", "COUNT\\(DISTINCT ...\\) takes one argument"),
        ("SELECT UPPER(sensor) FILTER (WHERE level > 1) FROM readings GROUP BY sensor",
         "FILTER \\(WHERE ...\\) follows"),
        ("SELECT DATE_FORMAT(ts, 'yyyy-ww') FROM readings", "unsupported pattern letters 'ww'"),
        ("SELECT DATE_FORMAT(ts, sensor) FROM readings", "the pattern a string literal"),
        ("SELECT REGEXP_EXTRACT(sensor, 'a(b') FROM readings", "invalid regex"),
        ("SELECT REGEXP_EXTRACT(sensor, 'a(b)(?:c)', 2) FROM readings", "the regex has 1 groups, there is no group 2"),
        ("SELECT SPLIT_INDEX(sensor, '-', level) FROM readings", "SPLIT_INDEX takes"),
        ("SELECT window_start, temp FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
         " GROUP BY window_start, window_end", "column temp is neither in GROUP BY nor inside an aggregate"),
        ("SELECT * FROM TABLE(SESSION(TABLE readings PARTITION BY sensor, DESCRIPTOR(ts), INTERVAL '1' SECOND))",
         "SESSION windows run in window aggregations"),
        ("SELECT COUNT(*) FROM TABLE(SESSION(TABLE readings PARTITION BY sensor, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
         " GROUP BY window_start, window_end", "groups by window_start, window_end and SESSION's PARTITION BY"),
        ("SELECT * FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(sensor), INTERVAL '1' SECOND))",
         "sensor is neither readings's watermarked column"),
        ("SELECT * FROM TABLE(HOP(TABLE readings, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '3' SECOND))",
         "whole multiple of its slide"),
        ("SELECT SOUNDEX(sensor) FROM readings", "unsupported function or expression"),
        ("SELECT sensor, ROW_NUMBER() OVER (ORDER BY ts) FROM readings", "OVER windows"),
        ("INSERT INTO nowhere SELECT sensor FROM readings", "INSERT INTO nowhere: no such table"),
    ],
)  # fmt: skip
def test_sql_the_engine_cannot_run_is_refused_with_its_position(log: Log, select: str, problem: str) -> None:
    with pytest.raises(InvalidSql, match=problem) as caught:
        Job(log, READINGS + select)
    assert caught.value.line >= READINGS.count("\n") + 1


def test_insert_into_checks_the_sinks_columns(log: Log) -> None:
    sink = "CREATE TABLE out (sensor STRING, n BIGINT, `time` TIMESTAMP_LTZ(3) METADATA) WITH ('topic' = 'out');"
    with pytest.raises(InvalidSql, match="the query gives 1 columns, the table takes 3"):
        Job(log, READINGS + sink + "INSERT INTO out SELECT sensor FROM readings")
    with pytest.raises(InvalidSql, match="metadata 'time' of column time is read-only"):
        Job(log, READINGS + sink + "INSERT INTO out SELECT sensor, level, ts FROM readings")
    with pytest.raises(InvalidSql, match="run the script as a job"):
        next(Job(log, READINGS + sink.replace(", `time` TIMESTAMP_LTZ(3) METADATA", "")
                 + "INSERT INTO out SELECT sensor, level FROM readings").query())  # fmt: skip


def test_a_window_top_n_keeps_the_first_rows_of_each_window(log: Log) -> None:
    levels: dict[str, list[int | None]] = {"a": [5, 1], "b": [7], "c": [2, 2], "d": [None]}
    log.append_events(
        "readings", [reading(i, sensor, level=level) for i, (sensor, ls) in enumerate(levels.items()) for level in ls]
    )
    log.append_events("readings", [reading(1_500, "a", level=1), reading(1_600, "b", level=1)])
    found = rows(
        log,
        "SELECT window_start, sensor, total, rownum FROM ("
        "  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY total DESC) AS rownum"
        "  FROM (SELECT window_start, window_end, sensor, SUM(level) AS total"
        "        FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
        "        GROUP BY window_start, window_end, sensor)"
        ") WHERE rownum <= 2",
    )
    second = T0 + timedelta(seconds=1)
    assert found == [
        {"window_start": T0, "sensor": "b", "total": 7, "rownum": 1},
        {"window_start": T0, "sensor": "a", "total": 6, "rownum": 2},
        {"window_start": second, "sensor": "a", "total": 1, "rownum": 1},
        {"window_start": second, "sensor": "b", "total": 1, "rownum": 2},
    ]


@pytest.mark.parametrize(
    ("ranking", "problem"),
    [
        ("SELECT *, ROW_NUMBER() OVER (PARTITION BY sensor ORDER BY ts) AS n FROM readings", None),
        ("SELECT *, ROW_NUMBER() OVER (ORDER BY c) AS n FROM (SELECT sensor, COUNT(*) AS c FROM readings"
         " GROUP BY sensor)", "ROW_NUMBER\\(\\) over an updating query"),
        ("SELECT sensor, ROW_NUMBER() OVER (ORDER BY temp * 2) AS n FROM readings", None),
        ("SELECT sensor, ROW_NUMBER() OVER (ORDER BY nope) AS n FROM readings", "unknown column nope"),
        ("SELECT sensor, ROW_NUMBER() OVER (ORDER BY ts) AS n, RANK() OVER (ORDER BY ts) AS m FROM readings",
         "one ROW_NUMBER"),
        (WINDOWED := "SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY total) AS n FROM"
         " (SELECT window_start, window_end, sensor, SUM(level) AS total FROM TABLE(TUMBLE(TABLE readings,"
         " DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end, sensor)", None),
        (WINDOWED.replace("PARTITION BY window_start, window_end", "PARTITION BY sensor"),
         "partitions by window_start"),
        (WINDOWED.replace("ORDER BY total", "ORDER BY level"), "ranks by columns the ranked query selects"),
    ],
)  # fmt: skip
def test_top_n_shapes_the_engine_does_not_run_are_refused(log: Log, ranking: str, problem: str | None) -> None:
    if problem is not None:
        with pytest.raises(InvalidSql, match=problem):
            Job(log, READINGS + f"SELECT * FROM ({ranking}) WHERE n <= 3")
        return
    Job(log, READINGS + f"SELECT * FROM ({ranking}) WHERE n < 4")
    for outside in ("", " WHERE n > 3", " WHERE n = 2", " WHERE n <= 3 GROUP BY sensor"):
        with pytest.raises(InvalidSql, match=r"keeps WHERE n <= N|unsupported GROUP around a Top-N"):
            Job(log, READINGS + f"SELECT * FROM ({ranking}){outside}")


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from("abc"), st.one_of(st.none(), st.integers(-3, 3))), max_size=40
    ),
    limit=st.integers(1, 3),
    descending=st.booleans(),
    numbered=st.booleans(),
)
def test_a_top_n_over_a_stream_matches_a_sort_of_all_rows(
    steps: list[tuple[int, str, int | None]], limit: int, descending: bool, numbered: bool
) -> None:
    # rows come in several batches (one append each): the first rows of a partition change as they come
    with connect("memory://") as log:
        log.create_topic("readings")
        t = 0
        for n, (gap, sensor, level) in enumerate(steps):
            t += gap
            log.append_events("readings", [reading(t, sensor, temp=float(n), level=level)])
        direction = "DESC" if descending else "ASC"
        shown = "sensor, temp, n" if numbered else "sensor, temp"
        found = rows(
            log,
            f"SELECT {shown} FROM (SELECT sensor, temp, ts, ROW_NUMBER() OVER (PARTITION BY sensor ORDER BY level"
            f" {direction}) AS n FROM readings) WHERE n <= {limit}",
        )
        # deduplication: the newest of rows of the same time comes first, as in Flink
        last = rows(
            log,
            "SELECT sensor, temp FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY sensor ORDER BY ts DESC) AS n"
            " FROM readings) WHERE n = 1",
        )
    want = []
    for sensor in "abc":
        mine = [(n, level) for n, (_, s, level) in enumerate(steps) if s == sensor]
        # NULLs first ascending and last descending; of equal levels, the first to come
        mine.sort(
            key=lambda row: (row[1] is not None, row[1] or 0, -row[0] if descending else row[0]), reverse=descending
        )
        want += [
            {"sensor": sensor, "temp": float(n), **({"n": i} if numbered else {})}
            for i, (n, _) in enumerate(mine[:limit], 1)
        ]
    key = lambda row: (row["sensor"], row["temp"])  # noqa: E731
    assert sorted(found, key=key) == sorted(want, key=key)
    times = {}
    for n, (_, sensor, _) in enumerate(steps):
        times[sensor] = n  # the last row of each sensor has the latest time (times only grow)
    assert sorted(last, key=key) == sorted(({"sensor": s, "temp": float(n)} for s, n in times.items()), key=key)


def test_session_windows_close_when_a_key_is_silent_for_the_gap(log: Log) -> None:
    # a: 0, 400, 900 (one session, merged) then 5000; b: 100, then 2500 (the gap is 1 s)
    times = [(0, "a"), (100, "b"), (400, "a"), (900, "a"), (2_500, "b"), (5_000, "a"), (9_000, "c")]
    log.append_events("readings", [reading(ms, sensor, level=ms) for ms, sensor in times])
    found = rows(
        log,
        "SELECT sensor, window_start, window_end, COUNT(*) AS n, MAX(level) AS last"
        " FROM TABLE(SESSION(TABLE readings PARTITION BY sensor, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
        " GROUP BY window_start, window_end, sensor",
    )
    got = [(r["sensor"], ms(r["window_start"]), ms(r["window_end"]), r["n"], r["last"]) for r in found]
    assert sorted(got) == [
        ("a", 0, 1_900, 3, 900),
        ("a", 5_000, 6_000, 1, 5_000),
        ("b", 100, 1_100, 1, 100),
        ("b", 2_500, 3_500, 1, 2_500),
        ("c", 9_000, 10_000, 1, 9_000),
    ]


def test_a_row_that_bridges_two_sessions_merges_them_and_late_rows_join_open_sessions(log: Log) -> None:
    log.append_events("readings", [reading(0), reading(1_500), reading(800), reading(9_000, "b")])
    # 800 bridges [0, 1000) and [1500, 2500); by 9000 (watermark 8000) they fired: 3000 is late
    log.append_events("readings", [reading(3_000), reading(8_500, "b")])
    job = Job(
        log,
        READINGS + "SELECT sensor, window_start, window_end, COUNT(*) AS n FROM TABLE(SESSION(TABLE readings"
        " PARTITION BY sensor, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end, sensor",
    )
    found = [
        (r["sensor"], ms(r["window_start"]), ms(r["window_end"]), r["n"])
        for _, t in job.query()
        for r in job_results(t)
    ]
    assert sorted(found) == [("b", 8_500, 10_000, 2), ("s1", 0, 2_500, 3)]  # 8500 joined b's open session
    assert job.pipelines[0].progress.late == 1


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 1500), st.sampled_from("ab")), max_size=40),
    gap=st.sampled_from([500, 1000]),
)
def test_sessions_match_a_reference(steps: list[tuple[int, str]], gap: int) -> None:
    times, t = [], 0
    for step, sensor in steps:
        t += step
        times.append((t, sensor))
    want: list[tuple[str, int, int, int]] = []
    for sensor in "ab":
        session: list[int] = []
        for at in [at for at, s in times if s == sensor] + [None]:
            if session and (at is None or at > session[-1] + gap):  # a row one gap on still belongs
                want.append((sensor, session[0], session[-1] + gap, len(session)))
                session = []
            if at is not None:
                session.append(at)
    with connect("memory://") as log:
        log.create_topic("readings")
        log.append_events("readings", [reading(at, sensor) for at, sensor in times])
        found = rows(
            log,
            f"SELECT sensor, window_start, window_end, COUNT(*) AS n FROM TABLE(SESSION(TABLE readings PARTITION BY"
            f" sensor, DESCRIPTOR(ts), INTERVAL '{gap / 1000:g}' SECOND)) GROUP BY window_start, window_end, sensor",
        )
    got = [(r["sensor"], ms(r["window_start"]), ms(r["window_end"]), r["n"]) for r in found]
    assert sorted(got) == sorted(want)


def test_texts_and_times_functions_follow_flinks(log: Log) -> None:
    urls = ["https://shop.example/a/b?x=1&channel_id=42", "", None, "a//b"]
    at = [(T0 + timedelta(milliseconds=3_723_004 + i)).isoformat() for i in range(len(urls))]
    events = [Event(type="r", source="/s", data={"sensor": u, "ts": t}) for u, t in zip(urls, at, strict=True)]
    log.append_events("readings", events)
    found = rows(
        log,
        "SELECT DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm:ss.SSS'), DATE_FORMAT(ts, 'd/M/yy ''at'' H''h''m'),"
        " REGEXP_EXTRACT(sensor, '(&|^|\\?)channel_id=([^&]*)', 2), REGEXP_EXTRACT(sensor, 'shop\\.[a-z]+'),"
        " REGEXP_EXTRACT(sensor, '[(]([a-z])[)]|/([a-z])/', 2),"
        " SPLIT_INDEX(sensor, '/', 3), SPLIT_INDEX(sensor, '/', 1), SPLIT_INDEX(sensor, '/', 9) FROM readings",
    )
    assert [list(row.values()) for row in found] == [
        ["2026-12-04 11:02:03.004", "4/12/26 at 11h2", "42", "shop.example", "a", "a", "", None],
        ["2026-12-04 11:02:03.005", "4/12/26 at 11h2", None, None, None, None, None, None],
        ["2026-12-04 11:02:03.006", "4/12/26 at 11h2", None, None, None, None, None, None],
        ["2026-12-04 11:02:03.007", "4/12/26 at 11h2", None, None, None, None, "", None],
    ]


def test_group_by_without_a_window_gives_each_groups_final_row(log: Log) -> None:
    log.append_events("readings", [reading(i, "ab"[i % 2], level=i) for i in range(7)] + [reading(9, "c", level=None)])
    found = rows(
        log, "SELECT sensor, COUNT(*) AS n, SUM(level) AS total FROM readings GROUP BY sensor HAVING COUNT(*) > 1"
    )
    assert sorted(found, key=lambda r: r["sensor"]) == [
        {"sensor": "a", "n": 4, "total": 12},
        {"sensor": "b", "n": 3, "total": 9},
    ]
    assert rows(log, "SELECT COUNT(*) AS n, MAX(level) AS top FROM readings") == [{"n": 8, "top": 6}]
    assert rows(
        log,
        "SELECT COUNT(DISTINCT sensor) AS sensors, COUNT(*) FILTER (WHERE level > 2) AS big,"
        " SUM(DISTINCT MOD(level, 3)) AS residues, AVG(DISTINCT level) FILTER (WHERE sensor <> 'c') AS mean,"
        " MIN(DISTINCT level) FILTER (WHERE level > 100) AS none_ FROM readings",
    ) == [{"sensors": 3, "big": 4, "residues": 3, "mean": 3, "none_": None}]


JOINED = """
CREATE TABLE orders (id BIGINT, amount BIGINT, ts TIMESTAMP_LTZ(3), WATERMARK FOR ts AS ts - INTERVAL '1' HOUR)
  WITH ('topic' = 'orders');
CREATE TABLE shipments (order_id BIGINT, carrier STRING, ts TIMESTAMP_LTZ(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' HOUR) WITH ('topic' = 'shipments');
"""


def stamped(topic: str, at: int, **data: Any) -> Event:
    return Event(type=topic, source="/shop", data={**data, "ts": (T0 + timedelta(milliseconds=at)).isoformat()})


def append_orders_and_shipments(log: Log, orders: list[tuple[int, int]], shipments: list[tuple[int, int]]) -> None:
    """Order n (key, ms) with amount n; shipment m (key, ms) with carrier cm."""
    for topic in ("orders", "shipments"):
        log.create_topic(topic)
    log.append_events("orders", [stamped("orders", at, id=key, amount=n) for n, (key, at) in enumerate(orders)])
    shipped = [stamped("shipments", at, order_id=key, carrier=f"c{n}") for n, (key, at) in enumerate(shipments)]
    log.append_events("shipments", shipped)


@settings(max_examples=40, deadline=None)
@given(
    orders=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3000)), max_size=25),
    shipments=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3000)), max_size=25),
    lower=st.integers(-2000, 500),
    width=st.integers(0, 2000),
    written=st.sampled_from(["between", "comparisons", "flipped", "one way", "no time"]),
)
def test_interval_and_regular_joins_match_a_nested_loop(
    orders: list[tuple[int, int]], shipments: list[tuple[int, int]], lower: int, width: int, written: str
) -> None:
    upper = lower + width

    def shifted(column: str, ms: int) -> str:
        return f"{column} {'+' if ms >= 0 else '-'} INTERVAL '{abs(ms) / 1000:g}' SECOND"

    conditions = {
        "between": f"o.ts BETWEEN {shifted('s.ts', lower)} AND {shifted('s.ts', upper)}",
        "comparisons": f"o.ts >= {shifted('s.ts', lower)} AND o.ts < {shifted('s.ts', upper + 1)}",
        "flipped": f"s.ts <= {shifted('o.ts', -lower)} AND {shifted('s.ts', upper)} >= o.ts",
        # bounded one way only, or not at all: regular joins, rows kept for good
        "one way": f"o.ts >= {shifted('s.ts', lower)}",
        "no time": "TRUE",
    }
    if written == "one way":
        upper = 10**9
    if written == "no time":
        lower, upper = -(10**9), 10**9
    with connect("memory://") as log:
        append_orders_and_shipments(log, orders, shipments)
        query = (
            "SELECT o.id, amount, carrier FROM orders o JOIN shipments s ON o.id = s.order_id AND "
            + conditions[written]
        )
        found = [r for _, t in Job(log, JOINED + query).query() for r in job_results(t)]
    want = [
        {"id": ko, "amount": n, "carrier": f"c{m}"}
        for n, (ko, to) in enumerate(orders)
        for m, (ks, ts) in enumerate(shipments)
        if ko == ks and lower <= to - ts <= upper
    ]
    key = lambda r: (r["amount"], r["carrier"])  # noqa: E731
    assert sorted(found, key=key) == sorted(want, key=key)


def test_an_interval_join_pushes_conditions_to_their_side_and_drops_late_rows() -> None:
    with connect("memory://") as log:
        for topic in ("orders", "shipments"):
            log.create_topic(topic)
        orders = [(1, 5, 0), (2, 50, 0), (3, 99, 100), (4, 60, 5_000)]
        log.append_events("orders", [stamped("orders", at, id=key, amount=amount) for key, amount, at in orders])
        # the shipment of order 3 comes after one at 5.2 s: the watermark it meets (5 s) is
        # past its interval's reach (2 s), so it is late and dropped
        shipped = [(2, 1_500), (4, 5_200), (3, 1_600), (1, 1_000)]
        log.append_events("shipments", [stamped("shipments", at, order_id=key, carrier="post") for key, at in shipped])
        query = (
            "SELECT o.id, s.carrier FROM orders AS o, shipments AS s WHERE o.id = s.order_id AND amount > 10"
            " AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '2' SECOND AND carrier <> CAST(o.id AS STRING)"
        )
        job = Job(log, JOINED.replace("INTERVAL '1' HOUR", "INTERVAL '0' SECOND") + query)
        found = [r for _, t in job.query() for r in job_results(t)]
        assert sorted(r["id"] for r in found) == [2, 4]
        assert job.pipelines[0].progress.late == 2  # the shipments of orders 3 and 1 (order 1 is filtered anyway)
        explained = "\n".join(job.plans[0].explain())
        assert "interval join o and s on 1 keys, o.ts - s.ts in [-2000, 0] ms" in explained


def window_side(table: str, alias: str, extra: str = "") -> str:
    return f"(SELECT * FROM TABLE(TUMBLE(TABLE {table}, DESCRIPTOR(ts), INTERVAL '1' SECOND)){extra}) {alias}"


@settings(max_examples=40, deadline=None)
@given(
    orders=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3000)), max_size=20),
    shipments=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3000)), max_size=20),
    kind=st.sampled_from(["", "LEFT", "RIGHT", "FULL OUTER"]),
)
def test_a_window_join_matches_a_nested_loop_per_window(
    orders: list[tuple[int, int]], shipments: list[tuple[int, int]], kind: str
) -> None:
    with connect("memory://") as log:
        append_orders_and_shipments(log, orders, shipments)
        query = (
            f"SELECT o.amount, s.carrier, COALESCE(o.window_start, s.window_start) AS ws"
            f" FROM {window_side('orders', 'o')} {kind} JOIN {window_side('shipments', 's')}"
            " ON o.id = s.order_id AND o.window_start = s.window_start AND o.window_end = s.window_end"
        )
        found = [
            (r["amount"], r["carrier"], ms(r["ws"]))
            for _, t in Job(log, JOINED + query).query()
            for r in job_results(t)
        ]
    inner: list[tuple[int | None, str | None, int]] = [
        (n, f"c{m}", to - to % 1000)
        for n, (ko, to) in enumerate(orders)
        for m, (ks, ts) in enumerate(shipments)
        if ko == ks and to // 1000 == ts // 1000
    ]
    want = list(inner)
    if kind in ("LEFT", "FULL OUTER"):
        want += [(n, None, to - to % 1000) for n, (_, to) in enumerate(orders) if not any(i[0] == n for i in inner)]
    if kind in ("RIGHT", "FULL OUTER"):
        want += [
            (None, f"c{m}", ts - ts % 1000)
            for m, (_, ts) in enumerate(shipments)
            if not any(i[1] == f"c{m}" for i in inner)
        ]
    key = lambda row: (str(row[0]), str(row[1]), row[2])  # noqa: E731
    assert sorted(found, key=key) == sorted(want, key=key)


@settings(max_examples=40, deadline=None)
@given(
    orders=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3000)), max_size=20),
    shipments=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3000)), max_size=20),
)
def test_a_window_join_of_window_aggregations_matches_a_count_per_window(
    orders: list[tuple[int, int]], shipments: list[tuple[int, int]]
) -> None:
    with connect("memory://") as log:
        append_orders_and_shipments(log, orders, shipments)
        tumble = "TABLE(TUMBLE(TABLE {}, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
        query = (
            "SELECT o.id, o.n, s.m, o.starts FROM"
            f" (SELECT id, COUNT(*) AS n, window_start AS starts, window_end AS ends FROM {tumble.format('orders')}"
            "  GROUP BY id, window_start, window_end) o"
            f" JOIN (SELECT order_id, COUNT(*) AS m, window_start, window_end FROM {tumble.format('shipments')}"
            "  GROUP BY order_id, window_start, window_end HAVING COUNT(*) > 1) s"
            " ON o.id = s.order_id AND o.starts = s.window_start AND o.ends = s.window_end"
        )
        joined = [r for _, t in Job(log, JOINED + query).query() for r in job_results(t)]
        found = sorted((r["id"], r["n"], r["m"], ms(r["starts"])) for r in joined)
    counted: dict[str, dict[tuple[int, int], int]] = {"orders": defaultdict(int), "shipments": defaultdict(int)}
    for topic, rows in (("orders", orders), ("shipments", shipments)):
        for key, at in rows:
            counted[topic][(key, at - at % 1000)] += 1
    want = sorted(
        (key, n, counted["shipments"][(key, start)], start)
        for (key, start), n in counted["orders"].items()
        if counted["shipments"].get((key, start), 0) > 1
    )
    assert found == want


@settings(max_examples=40, deadline=None)
@given(orders=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3000)), max_size=25))
def test_an_aggregation_of_a_window_aggregation_matches_counts_of_counts(orders: list[tuple[int, int]]) -> None:
    # per sliding window: the most orders of one id, how many ids have more than one, and (Nexmark's
    # q5) the ids with the most, a window join of the counts and their aggregation
    hop = "TABLE(HOP(TABLE orders, DESCRIPTOR(ts), INTERVAL '0.5' SECOND, INTERVAL '1' SECOND))"
    counts = (
        f"SELECT id, COUNT(*) AS n, window_start AS starts, window_end AS ends FROM {hop}"
        " GROUP BY id, window_start, window_end"
    )
    most = (
        f"SELECT c.starts, MAX(c.n) AS top, COUNT(*) FILTER (WHERE n > 1) AS busy, c.ends FROM ({counts}) c"
        " GROUP BY c.starts, c.ends"
    )
    leading = (
        f"SELECT a.id, a.n, a.starts FROM ({counts}) a JOIN ({most}) m"
        " ON a.starts = m.starts AND a.ends = m.ends AND a.n >= m.top"
    )
    with connect("memory://") as log:
        append_orders_and_shipments(log, orders, [])
        tops = [
            (ms(r["starts"]), r["top"], r["busy"]) for _, t in Job(log, JOINED + most).query() for r in job_results(t)
        ]
        leaders = [
            (r["id"], r["n"], ms(r["starts"])) for _, t in Job(log, JOINED + leading).query() for r in job_results(t)
        ]
    counted: dict[tuple[int, int], int] = defaultdict(int)
    for key, at in orders:
        for start in (at - at % 500, at - at % 500 - 500):
            counted[(start, key)] += 1
    top: dict[int, int] = {}
    busy: dict[int, int] = defaultdict(int)
    for (start, _), n in counted.items():
        top[start] = max(top.get(start, 0), n)
        busy[start] += n > 1
    assert sorted(tops) == sorted((start, n, busy[start]) for start, n in top.items())
    assert sorted(leaders) == sorted((key, n, start) for (start, key), n in counted.items() if n == top[start])


@settings(max_examples=40, deadline=None)
@given(
    orders=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3000)), max_size=15),
    shipments=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3000)), max_size=15),
)
def test_a_group_by_of_a_join_matches_a_nested_loop(
    orders: list[tuple[int, int]], shipments: list[tuple[int, int]]
) -> None:
    with connect("memory://") as log:
        append_orders_and_shipments(log, orders, shipments)
        query = (
            "SELECT o.id, s.order_id, COUNT(*) AS n, MAX(s.carrier) AS last, SUM(o.amount) AS total"
            " FROM orders o JOIN shipments s ON o.id = s.order_id GROUP BY o.id, s.order_id"
        )
        found = [r for _, t in Job(log, JOINED + query).query() for r in job_results(t)]
    pairs = [
        (key, n, f"c{m}") for n, (key, _) in enumerate(orders) for m, (other, _) in enumerate(shipments) if key == other
    ]
    want = {
        key: (len(ps), max(p[2] for p in ps), sum(p[1] for p in ps))
        for key in {p[0] for p in pairs}
        for ps in [[p for p in pairs if p[0] == key]]
    }
    assert {r["id"]: (r["n"], r["last"], r["total"]) for r in found} == want
    assert all(r["id"] == r["order_id"] for r in found)


def test_aggregations_of_queries_the_engine_does_not_run_are_refused(log: Log) -> None:
    tumble = "TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
    cases = [
        ("SELECT COUNT(*) FROM (SELECT a.sensor FROM readings a JOIN readings b ON a.sensor = b.sensor) j",
         "a query aggregated again is a window aggregation"),
        (f"SELECT MAX(n) FROM (SELECT COUNT(*) AS n, window_start FROM {tumble} GROUP BY sensor, window_start,"
         " window_end) c GROUP BY window_start", "selects its window_start and window_end"),
        (f"SELECT MAX(n) FROM (SELECT COUNT(*) AS n, window_start, window_end FROM {tumble} GROUP BY sensor,"
         " window_start, window_end) c GROUP BY c.window_end", "groups by window_start and window_end"),
        ("SELECT MAX(n) FROM (SELECT COUNT(*) AS n, window_start, window_end FROM TABLE(SESSION(TABLE readings"
         " PARTITION BY sensor, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY sensor, window_start, window_end) c"
         " GROUP BY window_start, window_end", "a query aggregated again is a window aggregation"),
        ("SELECT sensor FROM (SELECT DISTINCT sensor FROM readings) r", "this query inside a query is not supported"),
    ]  # fmt: skip
    for query, problem in cases:
        with pytest.raises(InvalidSql, match=problem):
            Job(log, READINGS + query)


@settings(max_examples=40, deadline=None)
@given(orders=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3000)), max_size=25))
def test_a_join_with_a_window_aggregation_matches_each_windows_maxima(orders: list[tuple[int, int]]) -> None:
    # order n has amount n % 4: each second's largest amount, and the orders that have it (the window
    # end is a value, not an event time: a regular join, with its time conditions as filters)
    with connect("memory://") as log:
        for topic in ("orders", "shipments"):
            log.create_topic(topic)
        log.append_events("orders", [stamped("orders", at, id=key, amount=n % 4) for n, (key, at) in enumerate(orders)])
        query = (
            "SELECT o.id, o.amount, m.ends FROM orders o JOIN (SELECT MAX(amount) AS top, window_end AS ends"
            " FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
            " GROUP BY window_start, window_end) m"
            " ON o.amount = m.top WHERE o.ts >= m.ends - INTERVAL '1' SECOND AND o.ts < m.ends"
        )
        found = sorted(
            (r["id"], r["amount"], ms(r["ends"])) for _, t in Job(log, JOINED + query).query() for r in job_results(t)
        )
    top: dict[int, int] = {}
    for n, (_, at) in enumerate(orders):
        top[at - at % 1000 + 1000] = max(top.get(at - at % 1000 + 1000, 0), n % 4)
    want = sorted(
        (key, n % 4, end)
        for n, (key, at) in enumerate(orders)
        for end, amount in top.items()
        if n % 4 == amount and end - 1000 <= at < end
    )
    assert found == want


def test_window_join_shapes_the_engine_does_not_run_are_refused() -> None:
    with connect("memory://") as log:
        on = " ON o.id = s.order_id AND o.window_start = s.window_start AND o.window_end = s.window_end"
        cases = [
            (f"SELECT * FROM {window_side('orders', 'o')} JOIN {window_side('shipments', 's')} ON o.id = s.order_id",
             "L.window_start = R.window_start"),
            (f"SELECT * FROM {window_side('orders', 'o')} JOIN (SELECT * FROM shipments) s" + on,
             "each side of a window join selects from TABLE"),
            (f"SELECT * FROM {window_side('orders', 'o')} LEFT JOIN {window_side('shipments', 's')}" + on
             + " AND o.amount > 1", "a LEFT window join takes equalities"),
            (f"SELECT * FROM {window_side('orders', 'o')} JOIN "
             + window_side("shipments", "s").replace("'1' SECOND", "'2' SECOND") + on,
             "the same window"),
            (f"SELECT * FROM {window_side('orders', 'o')} LEFT JOIN (SELECT order_id, COUNT(*) AS m, window_start,"
             " window_end FROM TABLE(TUMBLE(TABLE shipments, DESCRIPTOR(ts), INTERVAL '1' SECOND))"
             " GROUP BY order_id, window_start, window_end) s" + on,
             "a LEFT window join of window aggregations is not supported yet"),
        ]  # fmt: skip
        for query, problem in cases:
            with pytest.raises(InvalidSql, match=problem):
                Job(log, JOINED + query)


def test_windows_in_processing_time_are_the_clocks_when_rows_are_read(log: Log) -> None:
    log.append_events("readings", [reading(at, sensor) for at, sensor in [(0, "a"), (5_000, "b"), (9_000, "a")]])
    clock = FakeClock(1_800_000_000.25, autojump=False)  # 2027-01-15T08:00:00.250Z, far from the readings' times
    ddl = READINGS.replace("ts TIMESTAMP_LTZ(3),", "ts TIMESTAMP_LTZ(3), seen AS PROCTIME(),")
    declared = (
        "SELECT sensor, COUNT(*) AS n, window_start AS s FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(seen),"
        " INTERVAL '1' SECOND)) GROUP BY sensor, window_start, window_end"
    )
    added = (
        "SELECT r.sensor, COUNT(*) AS n, TUMBLE_START(r.seen, INTERVAL '1' SECOND) AS s"
        " FROM (SELECT *, PROCTIME() AS seen FROM readings) r GROUP BY r.sensor, TUMBLE(r.seen, INTERVAL '1' SECOND)"
    )
    for script in (ddl + declared, READINGS + added):
        job = Job(log, script, clock=clock)
        assert "window TUMBLE(seen, size 1000 ms) in processing time" in job.plans[0].explain()
        found = [(r["sensor"], r["n"], r["s"].isoformat()) for _, t in job.query() for r in job_results(t)]
        assert sorted(found) == [("a", 2, "2027-01-15T08:00:00+00:00"), ("b", 1, "2027-01-15T08:00:00+00:00")]
    stamped = rows(log, "SELECT sensor, seen FROM (SELECT *, PROCTIME() AS seen FROM readings) r")
    assert all(row["seen"] >= datetime.now(UTC) - timedelta(minutes=1) for row in stamped)  # the system clock


def test_a_query_in_from_that_projects_and_filters_is_merged_into_the_query_around_it(log: Log) -> None:
    log.append_events(
        "readings",
        [reading(at, sensor, level=at // 1000) for at, sensor in [(0, "a"), (900, "b"), (1_500, "a"), (2_500, "c")]],
    )
    nested = (
        "SELECT * FROM (SELECT s, twice FROM (SELECT UPPER(sensor) AS s, level * 2 AS twice FROM readings"
        " WHERE level >= 0) v WHERE twice < 4) w WHERE s <> 'B'"
    )
    assert [(r["s"], r["twice"]) for r in rows(log, nested)] == [("A", 0), ("A", 2)]
    grouped = (
        "SELECT v.s, COUNT(*) AS n, SUM(v.twice + 1) AS total, TUMBLE_START(v.ts, INTERVAL '2' SECOND) AS w"
        " FROM (SELECT sensor AS s, level * 2 AS twice, ts FROM readings) v"
        " GROUP BY v.s, TUMBLE(v.ts, INTERVAL '2' SECOND)"
    )
    found = sorted((r["s"], r["n"], r["total"], ms(r["w"])) for r in rows(log, grouped))
    assert found == [("a", 2, 4, 0), ("b", 1, 1, 0), ("c", 1, 5, 2000)]
    with pytest.raises(InvalidSql, match="unknown column level \\(the query in FROM gives s, twice\\)"):
        rows(log, "SELECT level FROM (SELECT sensor AS s, level * 2 AS twice FROM readings) v")


def test_processing_time_the_engine_does_not_run_is_refused(log: Log) -> None:
    cases = [
        ("CREATE TABLE t (x BIGINT, y AS x + 1) WITH ('topic' = 't'); SELECT * FROM t",
         "column y: unsupported computed column"),
        (READINGS + "SELECT * FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(level), INTERVAL '1' SECOND))",
         "level is neither readings's watermarked column nor a processing-time one"),
        (READINGS + "SELECT * FROM (SELECT *, PROCTIME() AS p FROM readings WHERE level > 1) r",
         "this query inside a query is not supported yet"),
        (READINGS.replace("ts TIMESTAMP_LTZ(3),", "ts TIMESTAMP_LTZ(3), p AS PROCTIME(),")
         + "SELECT * FROM (SELECT * FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(p), INTERVAL '1' SECOND))) a"
         " JOIN (SELECT * FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(p), INTERVAL '1' SECOND))) b"
         " ON a.sensor = b.sensor AND a.window_start = b.window_start AND a.window_end = b.window_end",
         "window joins in processing time are not supported yet"),
    ]  # fmt: skip
    for script, problem in cases:
        with pytest.raises(InvalidSql, match=problem):
            Job(log, script)


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 4).map(lambda n: n * 100), st.sampled_from("ab"), st.integers(-5, 9)), max_size=30
    ),
    frame=st.sampled_from(
        ["RANGE BETWEEN INTERVAL '0.5' SECOND PRECEDING AND CURRENT ROW", "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW",
         "RANGE UNBOUNDED PRECEDING", "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"]
    ),
)  # fmt: skip
def test_over_aggregates_match_each_rows_frame(steps: list[tuple[int, str, int]], frame: str) -> None:
    # times only grow, by 0 to 400 ms (ties: peers in RANGE, arrival order in ROWS; rows 500 ms apart)
    with connect("memory://") as log:
        log.create_topic("readings")
        at = 0
        for gap, sensor, level in steps:
            at += gap
            log.append_events("readings", [reading(at, sensor, level=level)])
        window = f"OVER (PARTITION BY sensor ORDER BY ts {frame})"
        found = rows(
            log, f"SELECT sensor, ts, level, SUM(level) {window} AS s, MIN(level) {window} AS low FROM readings"
        )
    times = list(itertools.accumulate(gap for gap, _, _ in steps))
    want = []
    for n, ((_, sensor, level), at) in enumerate(zip(steps, times, strict=True)):
        mine = [(t, lv) for m, ((_, s, lv), t) in enumerate(zip(steps, times, strict=True)) if s == sensor and m <= n]
        if frame.startswith("RANGE"):  # peers of the same time count, those after it in the input too
            peers = [
                (t, lv) for m, ((_, s, lv), t) in enumerate(zip(steps, times, strict=True)) if s == sensor and t == at
            ]
            mine = [*(r for r in mine if r[0] < at), *peers]
            if "0.5" in frame:
                mine = [r for r in mine if r[0] >= at - 500]
        elif "2 PRECEDING" in frame:
            mine = mine[-3:]
        values = [lv for _, lv in mine]
        want.append((sensor, at, level, sum(values), min(values)))
    assert sorted((r["sensor"], ms(r["ts"]), r["level"], r["s"], r["low"]) for r in found) == sorted(want)


def test_over_windows_the_engine_does_not_run_are_refused(log: Log) -> None:
    over = "OVER (PARTITION BY sensor ORDER BY ts RANGE BETWEEN INTERVAL '1' SECOND PRECEDING AND CURRENT ROW)"
    cases = [
        ("SELECT SUM(level) OVER (PARTITION BY sensor ORDER BY ts DESC) FROM readings", "event-time column"),
        ("SELECT SUM(level) OVER (PARTITION BY sensor ORDER BY level) FROM readings", "event-time column"),
        (f"SELECT SUM(level) {over}, MAX(level) OVER (ORDER BY ts) FROM readings", "over one window"),
        (f"SELECT SUM(level) {over}, ROW_NUMBER() {over} FROM readings", "beside OVER aggregates is not supported"),
        (f"SELECT COUNT(DISTINCT level) {over} FROM readings", "DISTINCT in an OVER aggregate"),
        ("SELECT SUM(level) OVER (PARTITION BY sensor ORDER BY ts ROWS BETWEEN 1 FOLLOWING AND 3 FOLLOWING)"
         " FROM readings", "PRECEDING"),
        (f"SELECT sensor, SUM(level) {over} FROM readings GROUP BY sensor", "GROUP BY beside OVER"),
    ]  # fmt: skip
    for query, problem in cases:
        with pytest.raises(InvalidSql, match=problem):
            Job(log, READINGS + query)


def test_doubles_become_text_as_java_writes_them(log: Log) -> None:
    temps = [1250.0, 0.5, 1e7, 0.0001, -2.5e-5, None]
    log.append_events("readings", [reading(i, "a", t) for i, t in enumerate(temps)])
    found = rows(log, "SELECT CAST(temp AS STRING) AS text, CONCAT('t=', CAST(temp AS STRING)) AS line FROM readings")
    assert [r["text"] for r in found] == ["1250.0", "0.5", "1.0E7", "1.0E-4", "-2.5E-5", None]
    assert found[0]["line"] == "t=1250.0"
    assert found[-1]["line"] is None


def test_older_group_windows_mean_their_window_table_functions(log: Log) -> None:
    times = [(0, "a"), (400, "a"), (900, "b"), (1_600, "a")]
    log.append_events("readings", [reading(at, sensor, level=at) for at, sensor in times])
    found = rows(
        log,
        "SELECT r.sensor, TUMBLE_START(r.ts, INTERVAL '1' SECOND) AS s, TUMBLE_END(r.ts, INTERVAL '1' SECOND) AS e,"
        " COUNT(*) AS n FROM readings r GROUP BY r.sensor, TUMBLE(r.ts, INTERVAL '1' SECOND)",
    )
    assert sorted((r["sensor"], ms(r["s"]), ms(r["e"]), r["n"]) for r in found) == [
        ("a", 0, 1000, 2), ("a", 1000, 2000, 1), ("b", 0, 1000, 1)
    ]  # fmt: skip
    sessions = rows(
        log,
        "SELECT sensor, SESSION_START(ts, INTERVAL '0.5' SECOND) AS s, COUNT(*) AS n"
        " FROM readings GROUP BY sensor, SESSION(ts, INTERVAL '0.5' SECOND)",
    )
    assert sorted((r["sensor"], ms(r["s"]), r["n"]) for r in sessions) == [("a", 0, 2), ("a", 1600, 1), ("b", 900, 1)]
    with pytest.raises(InvalidSql, match="unsupported TUMBLE_PROCTIME"):
        Job(log, READINGS + "SELECT TUMBLE_PROCTIME(ts, INTERVAL '1' SECOND) FROM readings"
            " GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)")  # fmt: skip
