"""Backends chosen by URL scheme. Each is a package with `open_log(url, parts, options)` and, if
it keeps an event store, `open_recorder(url, parts, options)` (and `open_workflow_recorder` for
workflow instances); it is imported only when a URL names it, so the core never loads a backend
it does not use (nor its client library)."""

from __future__ import annotations

import importlib
from types import ModuleType
from urllib.parse import SplitResult, parse_qsl, urlsplit

from inmotion.errors import InvalidConfig

_BACKENDS: dict[str, str] = {
    "memory": "inmotion.log.memory",
    "sqlite": "inmotion.log.sqlite",
    "kafka": "inmotion.log.kafka",
}
_EXTRAS = {"confluent_kafka": "kafka"}
"""Client libraries that come with an extra: a backend that misses one says how to install it."""


def register_backend(scheme: str, module: str) -> None:
    """Serve `scheme://` URLs with the backend package `module` (a dotted name)."""
    _BACKENDS[scheme] = module


def backend_for(url: str) -> tuple[ModuleType, SplitResult, dict[str, str]]:
    """The backend package for `url`, the URL's parts and its query options."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    name = _BACKENDS.get(parts.scheme)
    if name is None:
        known = ", ".join(f"{scheme}://" for scheme in _BACKENDS)
        raise InvalidConfig(f"unknown broker URL {url!r}: use one of {known}")
    try:
        return importlib.import_module(name), parts, options
    except ImportError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        raise InvalidConfig(f"the {parts.scheme} backend needs {exc.name}: pip install 'inmotion[{extra}]'") from exc
