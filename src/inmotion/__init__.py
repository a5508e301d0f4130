"""inmotion: event-driven systems in Python, on one SQLite file or on Apache Kafka."""

from inmotion.events import Event
from inmotion.log import Log, Message, Record, TopicConfig, connect

__version__ = "0.1.0"

__all__ = ["Event", "Log", "Message", "Record", "TopicConfig", "__version__", "connect"]
