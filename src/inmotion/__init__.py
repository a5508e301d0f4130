"""inmotion: event-driven systems in Python, on one SQLite file or on Apache Kafka."""

from inmotion.events import Event
from inmotion.log import Log, Message, Record, TopicConfig, connect
from inmotion.runtime import App, Context, Retry

__version__ = "0.1.0"

__all__ = [
    "App",
    "Context",
    "Event",
    "Log",
    "Message",
    "Record",
    "Retry",
    "TopicConfig",
    "__version__",
    "connect",
]
