"""Kafka's errors as inmotion's own: which codes mean an unreachable broker, an unknown topic,
a refused request or bad settings, and the error each becomes (Kafka's name kept in the message)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from inmotion.errors import BrokerUnavailable, InmotionError, InvalidConfig, NotAuthorized, TopicExists, UnknownTopic


def _codes(*names: str) -> frozenset[int]:
    return frozenset(getattr(KafkaError, name) for name in names if hasattr(KafkaError, name))


UNAVAILABLE = _codes(
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "_TIMED_OUT",
    "_MSG_TIMED_OUT",
    "_RESOLVE",
    "_DESTROY",
    "_DESTROY_BROKER",
    "_NODE_UPDATE",
    "NETWORK_EXCEPTION",
    "REQUEST_TIMED_OUT",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_FOR_PARTITION",
    "BROKER_NOT_AVAILABLE",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_COORDINATOR",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "NOT_ENOUGH_REPLICAS",
    "KAFKA_STORAGE_ERROR",
    # transient while a partition gets or changes its leader (just created, broker restarted);
    # librdkafka's own "unknown partition" comes from a metadata cache that is being refreshed:
    # partitions are checked against the topic's partition count before any call
    "_UNKNOWN_PARTITION",
    "UNKNOWN_LEADER_EPOCH",
    "FENCED_LEADER_EPOCH",
    "OFFSET_NOT_AVAILABLE",
    "REPLICA_NOT_AVAILABLE",
    "PREFERRED_LEADER_NOT_AVAILABLE",
    "ELIGIBLE_LEADERS_NOT_AVAILABLE",
)
UNKNOWN_TOPIC = _codes("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "UNKNOWN_TOPIC_ID")
NOT_AUTHORIZED = _codes(
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
    "SASL_AUTHENTICATION_FAILED",
    "_AUTHENTICATION",
)
INVALID = _codes(
    "INVALID_CONFIG",
    "INVALID_PARTITIONS",
    "INVALID_REPLICATION_FACTOR",
    "POLICY_VIOLATION",
    "TOPIC_EXCEPTION",
    "INVALID_REQUEST",
    "_INVALID_ARG",
    "MSG_SIZE_TOO_LARGE",
    "INVALID_RECORD",
)


def translate(error: KafkaError, doing: str, topic: str | None = None) -> InmotionError:
    """A backend-neutral error for a Kafka error; the Kafka error's name stays in the message."""
    code = error.code()
    detail = f"{doing}: {error.name()}: {error.str()}"
    if code in UNKNOWN_TOPIC and topic is not None:
        exc: InmotionError = UnknownTopic(topic)
    elif code == KafkaError.TOPIC_ALREADY_EXISTS and topic is not None:
        exc = TopicExists(topic)
    elif code in UNAVAILABLE:
        exc = BrokerUnavailable(detail)
    elif code in INVALID:
        exc = InvalidConfig(detail)
    elif code in NOT_AUTHORIZED:
        exc = NotAuthorized(detail)
    else:  # everything else: by Kafka's name
        exc = InmotionError(detail)
    exc.kafka_error = error  # type: ignore[attr-defined]
    return exc


def error_of(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None
