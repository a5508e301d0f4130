"""Metrics as data (histograms included) and the reports that carry them to the gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from inmotion.clock import FakeClock
from inmotion.log import Message, TopicConfig, connect
from inmotion.runtime import App
from inmotion.runtime.metrics import Metrics
from inmotion.runtime.reports import METRICS_TOPIC, Reports, reporter
from inmotion.testing import eventually


def parsed(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name and labels, as Prometheus' own parser reads them."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_a_histogram_counts_each_value_in_every_bucket_at_or_above_it() -> None:
    metrics = Metrics(runtime=False)
    metrics.describe("latency_seconds", "histogram", "How long.")
    histogram = metrics.histogram("latency_seconds", [0.1, 0.01, 1], route="a")  # bounds in any order
    for value in (0.005, 0.05, 0.05, 0.5, 7):
        histogram.observe(value)
    buckets = parsed(metrics.prometheus())["latency_seconds_bucket"]
    assert [buckets[("le", le), ("route", "a")] for le in ("0.01", "0.1", "1.0", "+Inf")] == [1, 3, 4, 5]
    assert parsed(metrics.prometheus())["latency_seconds_count"] == {(("route", "a"),): 5}
    assert parsed(metrics.prometheus())["latency_seconds_sum"][(("route", "a"),)] == 7.605


def test_series_of_several_processes_become_one_family_each_labelled_by_instance() -> None:
    source = Metrics()
    source.add("inmotion_consumed_total", 3, group="g", topic="t")
    source.describe("latency_seconds", "histogram", "How long.")
    source.histogram("latency_seconds", [1.0]).observe(0.5)
    combined = Metrics(runtime=False)
    combined.include(source.series(), instance="a@host:1")
    combined.include(source.series(), instance="b@host:2")
    text = combined.prometheus()
    assert text.count("# TYPE inmotion_consumed_total counter") == 1
    samples = parsed(text)
    assert samples["inmotion_consumed_total"] == {
        (("group", "g"), ("instance", "a@host:1"), ("topic", "t")): 3,
        (("group", "g"), ("instance", "b@host:2"), ("topic", "t")): 3,
    }
    assert samples["latency_seconds_bucket"][(("instance", "b@host:2"), ("le", "+Inf"))] == 1


def test_an_app_reports_its_counters_until_it_stops_and_stale_reports_are_left_out(tmp_path: Path) -> None:
    clock = FakeClock(autojump=False)
    broker = f"sqlite:///{tmp_path / 'log.db'}"

    async def main() -> None:
        with App("shop", broker, clock=clock) as app:

            @app.subscribe("orders", group="shop")
            async def handle(order: dict[str, int]) -> None:
                pass

            app.task(reporter(app, every=5))
            reports = Reports(app.log)  # one reader throughout: each look reads on from the last
            stop = asyncio.Event()
            running = asyncio.create_task(app.run(stop))
            await eventually(lambda: clock.sleeping == 1, what="the first report")
            assert [r.instance.split("@")[0] for r in reports.fresh(clock.time())] == ["shop"]
            await app.publish("orders", {"n": 1})
            await eventually(lambda: app.metrics.value("inmotion_consumed_total") == 1, what="the order handled")
            clock.advance(5)
            await eventually(lambda: _consumed(reports, clock.time()) == 1, what="a report with the order")
            await app.publish("orders", {"n": 2})
            await eventually(lambda: app.metrics.value("inmotion_consumed_total") == 2, what="the second order")
            stop.set()
            await running
            assert _consumed(reports, clock.time()) == 2  # the report at shutdown
            assert reports.fresh(clock.time() + 61) == []  # a process silent for a minute is gone

    asyncio.run(main())


def _consumed(reports: Reports, now: float) -> float:
    [report] = reports.fresh(now)
    [values] = [values for name, _, _, values in report.series if name == "inmotion_consumed_total"]
    return sum(value for _, value in values)


def test_records_on_the_metrics_topic_that_are_no_reports_are_skipped(tmp_path: Path) -> None:
    with connect(f"sqlite:///{tmp_path / 'log.db'}") as log:
        log.create_topic(METRICS_TOPIC, TopicConfig(partitions=1, compact=True))
        log.append(METRICS_TOPIC, [Message(b"not json", b"x"), Message(b'{"instance": 1}', b"y"), Message(None, b"z")])
        assert Reports(log).fresh(0) == []
