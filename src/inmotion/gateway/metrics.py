"""`/metrics`: the whole log in the Prometheus text format, read when scraped: the gateway's own
counters (events published through it, HTTP requests and their time), those the processes on
the log reported (`inmotion run` apps, `inmotion route` routers: see `inmotion.runtime.reports`;
labelled by instance), and the log's gauges (each topic's end offsets and sizes, dead-letter
topics' sizes, each group's members and lag per partition)."""

from __future__ import annotations

from inmotion.errors import UnknownTopic
from inmotion.log import Coordinator, Log
from inmotion.log.lag import all_groups, group_lag
from inmotion.runtime.metrics import Metrics
from inmotion.runtime.reports import Reports

HTTP_REQUESTS = "inmotion_http_requests_total"
HTTP_SECONDS = "inmotion_http_request_duration_seconds"
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_LOG_SERIES = {
    "inmotion_topic_end_offset": "Next offset of each partition (its rate is the partition's throughput).",
    "inmotion_topic_records": "Records each partition holds (end minus earliest offset).",
    "inmotion_dead_letters": "Entries of each dead-letter topic (a topic named *.dlq).",
    "inmotion_group_members": "Live members of each consumer group.",
    "inmotion_group_lag": "Records a consumer group has not committed yet, per partition.",
}


def describe_http(metrics: Metrics) -> None:
    metrics.describe(HTTP_REQUESTS, "counter", "HTTP requests the gateway answered, by route and status.")
    metrics.describe(HTTP_SECONDS, "histogram", "Seconds to the first byte of each HTTP response, by route and status.")


def scrape(own: Metrics, reports: Reports, log: Log, coordinator: Coordinator, now: float) -> str:
    """Everything /metrics shows (reads the log: call it in a thread)."""
    counters = Metrics(runtime=False)
    counters.include(own.series())
    for report in reports.fresh(now):
        counters.include(report.series, instance=report.instance)
    return counters.prometheus() + log_metrics(log, coordinator)


def log_metrics(log: Log, coordinator: Coordinator) -> str:
    """The log's gauges, read now."""
    gauges = Metrics(runtime=False)
    for name, text in _LOG_SERIES.items():
        gauges.describe(name, "gauge", text)
    for topic in log.list_topics():
        try:
            info = log.describe_topic(topic)
        except UnknownTopic:  # deleted meanwhile
            continue
        for p in info.partitions:
            gauges.set("inmotion_topic_end_offset", p.latest, topic=topic, partition=str(p.partition))
            gauges.set("inmotion_topic_records", p.latest - p.earliest, topic=topic, partition=str(p.partition))
        if topic.endswith(".dlq"):
            gauges.set("inmotion_dead_letters", sum(p.latest - p.earliest for p in info.partitions), topic=topic)
    for group in all_groups(log, coordinator):
        gauges.set("inmotion_group_members", len(coordinator.members(group)), group=group)
        for state in group_lag(log, coordinator, group):
            gauges.set("inmotion_group_lag", state.lag, group=group, topic=state.topic, partition=str(state.partition))
    return gauges.prometheus()
