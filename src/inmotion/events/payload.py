"""Typed payloads: pydantic models, dataclasses, msgspec Structs and plain JSON values.

`to_builtins` turns a payload into JSON values (or leaves bytes alone); `from_data` turns JSON
values back into the user's class.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar, cast

import msgspec
import pydantic

from inmotion.errors import InvalidEvent

T = TypeVar("T")


def to_builtins(data: Any) -> Any:
    """The JSON-compatible form of `data`; bytes stay bytes."""
    if data is None or isinstance(data, str | int | float | bool | bytes):
        return data
    if isinstance(data, pydantic.BaseModel):
        return data.model_dump(mode="json")
    try:
        return msgspec.to_builtins(data, builtin_types=(bytes,))
    except TypeError as exc:
        raise InvalidEvent("data", f"cannot encode {type(data).__name__} as JSON: {exc}") from exc


def from_data(data: Any, cls: type[T]) -> T:
    """`data` (a JSON value, bytes, or already an instance) as an instance of `cls`."""
    if cls is Any or (isinstance(cls, type) and isinstance(data, cls)):
        return cast(T, data)
    try:
        if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
            return cast(T, cls.model_validate(data))
        if isinstance(cls, type) and (dataclasses.is_dataclass(cls) or issubclass(cls, msgspec.Struct)):
            return msgspec.convert(data, cls, strict=False)
        return cast(T, _adapter(cast(Any, cls)).validate_python(data))
    except (pydantic.ValidationError, msgspec.ValidationError) as exc:
        name = getattr(cls, "__name__", repr(cls))
        raise InvalidEvent("data", f"does not fit {name}: {exc}") from exc


@functools.lru_cache(maxsize=256)
def _adapter(cls: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(cls)
