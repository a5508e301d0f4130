"""Events: the CloudEvents envelope, its codecs and typed payloads."""

from inmotion.events.codec import (
    BATCH_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    from_batch,
    from_binary,
    from_dict,
    from_json,
    to_batch,
    to_binary,
    to_dict,
    to_json,
)
from inmotion.events.envelope import Event
from inmotion.events.payload import from_data, to_builtins

__all__ = [
    "BATCH_CONTENT_TYPE",
    "STRUCTURED_CONTENT_TYPE",
    "Event",
    "from_batch",
    "from_binary",
    "from_data",
    "from_dict",
    "from_json",
    "to_batch",
    "to_binary",
    "to_builtins",
    "to_dict",
    "to_json",
]
