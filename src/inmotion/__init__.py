"""inmotion: event-driven systems in Python, on one SQLite file or on Apache Kafka."""

from typing import TYPE_CHECKING, Any

from inmotion.events import Event
from inmotion.log import Log, Message, Record, TopicConfig, connect

if TYPE_CHECKING:
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

_RUNTIME = frozenset({"App", "Context", "Retry"})


def __getattr__(name: str) -> Any:
    """The runtime's names, imported when first used (PEP 562): a command or a module that
    runs no app (`inmotion sql query`, `inmotion.streams`) starts without the runtime."""
    if name in _RUNTIME:
        import inmotion.runtime

        return getattr(inmotion.runtime, name)
    raise AttributeError(f"module 'inmotion' has no attribute {name!r}")
