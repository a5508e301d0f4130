"""`/metrics`: the whole log in the Prometheus text format (each topic's end offsets and sizes,
dead-letter topics' sizes, each group's members and lag per partition), read when scraped,
after the gateway's own counters (events published through it, HTTP requests and their time)."""

from __future__ import annotations

from inmotion.errors import UnknownTopic
from inmotion.log import Coordinator, Log
from inmotion.log.lag import all_groups, group_lag
from inmotion.runtime.metrics import Metrics

HTTP_REQUESTS = "inmotion_http_requests_total"
HTTP_SECONDS = "inmotion_http_request_seconds_total"

_LOG_SERIES = {
    "inmotion_topic_end_offset": "Next offset of each partition (its rate is the partition's throughput).",
    "inmotion_topic_records": "Records each partition holds (end minus earliest offset).",
    "inmotion_dead_letters": "Entries of each dead-letter topic (a topic named *.dlq).",
    "inmotion_group_members": "Live members of each consumer group.",
    "inmotion_group_lag": "Records a consumer group has not committed yet, per partition.",
}


def describe_http(metrics: Metrics) -> None:
    metrics.describe(HTTP_REQUESTS, "counter", "HTTP requests the gateway answered, by route and status.")
    metrics.describe(HTTP_SECONDS, "counter", "Seconds the gateway spent answering HTTP requests, by route and status.")


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
