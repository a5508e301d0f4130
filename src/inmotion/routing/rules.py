"""Rules: a name, source topics, a pattern, targets, an optional input transform; and the YAML
file that lists them.

```yaml
unmatched: orders.unmatched          # optional catch-all topic
rules:
  - name: big-orders
    sources: [orders]
    pattern: {type: [com.acme.order.created], data: {amount: [{numeric: [">=", 1000]}]}}
    transform:                       # optional, as an EventBridge input transformer
      paths: {id: $.data.id, amount: $.data.amount}
      template: '{"order": "<id>", "amount": <amount>}'
    targets:
      - topic: big-orders
      - http: http://127.0.0.1:8080/hooks/orders
        mode: binary                 # or structured
        timeout: 5
        retry: {attempts: 5, backoff: 0.5, max_backoff: 30}
        dead_letter: big-orders.dlq
      - handler: myapp.alerts:notify
```
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml

from inmotion.errors import InvalidConfig, InvalidPattern
from inmotion.events import Event
from inmotion.log.base import check_topic_name
from inmotion.patterns.pattern import Pattern, event_document
from inmotion.runtime.retry import Retry

Handler: TypeAlias = Callable[[Event], object]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TopicTarget:
    """Forward the event to a topic of the log: the router appends it itself, so a failed
    append is retried, then dead-lettered, with the router's own group."""

    topic: str

    def __post_init__(self) -> None:
        check_topic_name(self.topic)

    def describe(self) -> str:
        return f"topic {self.topic}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HandlerTarget:
    """Call a function (plain, in a worker thread, or async) in this process; an exception is
    a failed try. Without `dead_letter` an event that fails every try goes to the target's
    own `<delivery topic>.dlq`."""

    handler: Handler
    retry: Retry = Retry()
    dead_letter: str | None = None

    def __post_init__(self) -> None:
        if not callable(self.handler):
            raise InvalidConfig(f"a handler target needs a callable, got {self.handler!r}")
        _check_dead_letter(self.dead_letter)

    def describe(self) -> str:
        return f"handler {getattr(self.handler, '__qualname__', repr(self.handler))}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HttpTarget:
    """POST the CloudEvent to an HTTP endpoint: 2xx delivered; timeouts, connection errors,
    redirects (never followed), 408, 429 and 5xx retried with backoff; any other 4xx straight
    to the dead-letter topic (without `dead_letter`, the target's own `<delivery topic>.dlq`)."""

    url: str
    mode: Literal["binary", "structured"] = "binary"
    timeout: float = 5.0
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    retry: Retry = Retry()
    dead_letter: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not re.match(r"https?://[^/]+", self.url):
            raise InvalidConfig(f"an HTTP target needs an http:// or https:// URL, got {self.url!r}")
        if self.mode not in ("binary", "structured"):
            raise InvalidConfig(f"HTTP mode is 'binary' or 'structured', got {self.mode!r}")
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not 0 < self.timeout < math.inf
        ):
            raise InvalidConfig(f"HTTP timeout must be a positive, finite number of seconds, got {self.timeout!r}")
        for name, value in self.headers.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or not re.fullmatch(r"[\t\x20-\x7e]*", value):
                raise InvalidConfig(f"HTTP header {name!r}: names are tokens, values printable ASCII (no CR or LF)")
        _check_dead_letter(self.dead_letter)

    def describe(self) -> str:
        return f"POST {self.url} ({self.mode})"


Target: TypeAlias = TopicTarget | HandlerTarget | HttpTarget


def _check_dead_letter(topic: str | None) -> None:
    if topic is not None:
        check_topic_name(topic)


# --- input transforms ----------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")
_PATH_STEP = re.compile(r"\.([A-Za-z0-9_\-$@]+)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")
_MISSING: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class InputTransform:
    """EventBridge input transformer: JSONPath variables poured into a template.

    A placeholder inside a JSON string ("Order <id>") receives the value's text; elsewhere it
    receives the value as JSON (a missing value becomes null). `<aws.events.event>` and
    `<aws.events.event.json>` stand for the whole event, `<aws.events.rule-name>` for the rule.
    The result becomes the event's data: JSON when the rendered template parses as JSON, text
    otherwise.
    """

    paths: Mapping[str, str]
    template: str

    def __post_init__(self) -> None:
        if not isinstance(self.template, str):
            raise InvalidConfig("an input transform's template is a string")
        for name, path in self.paths.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
                raise InvalidConfig(f"input transform variable names use letters, digits, _ and -, got {name!r}")
            _parse_path(path)
        for name in _PLACEHOLDER.findall(self.template):
            if name not in self.paths and not name.startswith("aws.events."):
                raise InvalidConfig(f"the template uses <{name}> but paths define no {name!r}")

    def apply(self, event: Event, rule: str) -> Event:
        document = event_document(event)
        values = {name: _select(document, _parse_path(path)) for name, path in self.paths.items()}
        values["aws.events.event"] = values["aws.events.event.json"] = document
        values["aws.events.rule-name"] = rule
        if self._is_json:
            data: Any = json.loads(_render(self.template, values, in_json=True))
            return event.replace(data=data, datacontenttype="application/json")
        return event.replace(data=_render(self.template, values, in_json=False), datacontenttype="text/plain")

    @property
    def _is_json(self) -> bool:
        try:
            json.loads(_PLACEHOLDER.sub("null", self.template))
        except json.JSONDecodeError:
            return False
        return True


def _parse_path(path: object) -> list[str | int]:
    if not isinstance(path, str) or not path.startswith("$"):
        raise InvalidConfig(f"input transform paths are JSONPath expressions starting with $, got {path!r}")
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        match = _PATH_STEP.match(path, position)
        if match is None:
            raise InvalidConfig(f"unsupported JSONPath {path!r}: use $.a.b, $.a[0] or $['a b']")
        name, index, quoted, double_quoted = match.groups()
        steps.append(int(index) if index is not None else name or quoted or double_quoted or "")
        position = match.end()
    return steps


def _select(document: Any, steps: Sequence[str | int]) -> Any:
    node = document
    for step in steps:
        if isinstance(step, int):
            node = node[step] if isinstance(node, list) and step < len(node) else _MISSING
        else:
            node = node.get(step, _MISSING) if isinstance(node, dict) else _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def _render(template: str, values: Mapping[str, Any], *, in_json: bool) -> str:
    """Fill the placeholders: as JSON values in a JSON template (as text inside its strings),
    as text in a plain-text template."""
    out: list[str] = []
    in_string = not in_json
    escaped = False
    position = 0
    while position < len(template):
        char = template[position]
        match = _PLACEHOLDER.match(template, position) if char == "<" else None
        if match is not None and match.group(1) in values:
            value = values[match.group(1)]
            if in_string:
                text = value if isinstance(value, str) else json.dumps(None if value is _MISSING else value)
                out.append(json.dumps(text)[1:-1] if in_json else text)
            else:
                out.append(json.dumps(None if value is _MISSING else value))
            position = match.end()
            continue
        if not in_json:
            pass
        elif in_string and escaped:
            escaped = False
        elif in_string and char == "\\":
            escaped = True
        elif char == '"':
            in_string = not in_string
        out.append(char)
        position += 1
    return "".join(out)


# --- rules ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """Events from `sources` (all source topics when empty) that match `pattern` go to every target."""

    name: str
    pattern: Pattern
    targets: tuple[Target, ...]
    sources: tuple[str, ...] = ()
    transform: InputTransform | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidConfig(f"a rule name is a non-empty string, got {self.name!r}")
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.targets:
            raise InvalidConfig(f"rule {self.name!r} has no targets")
        for source in self.sources:
            check_topic_name(source)


@dataclasses.dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    unmatched: str | None = None
    """The catch-all topic for events that match no rule (None: count them only)."""

    def __post_init__(self) -> None:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidConfig(f"rule names must be unique: {', '.join(duplicates)}")
        _check_dead_letter(self.unmatched)


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules file; InvalidConfig or InvalidPattern name the rule at fault."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidConfig(f"cannot read rules file {str(path)!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidConfig(
            f"cannot read rules file {str(path)!r}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})"
        ) from None
    return parse_rules(text, str(path))


def parse_rules(text: str, origin: str = "<rules>") -> RuleSet:
    try:
        document = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidConfig(f"{origin}: not valid YAML{where}: {problem}") from exc
    except RecursionError:
        raise InvalidConfig(f"{origin}: not valid YAML: nested too deeply") from None
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise InvalidConfig(f"{origin}: expected a mapping with a 'rules' list")
    unknown = set(document) - {"rules", "unmatched"}
    if unknown:
        raise InvalidConfig(f"{origin}: unknown top-level keys: {', '.join(sorted(map(str, unknown)))}")
    rules = []
    for index, entry in enumerate(document["rules"]):
        where = f"{origin}: rules[{index}]"
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            where = f"{origin}: rule {entry['name']!r}"
        try:
            rules.append(_rule(entry))
        except InvalidPattern as exc:
            raise InvalidPattern(exc.path, f"{where}: {exc.problem}") from exc
        except InvalidConfig as exc:
            raise InvalidConfig(f"{where}: {exc}") from exc
    try:
        return RuleSet(tuple(rules), document.get("unmatched"))
    except InvalidConfig as exc:
        raise InvalidConfig(f"{origin}: {exc}") from exc


MAX_YAML_NODES = 100_000
"""YAML nodes a rules file may expand to, an alias counted at each use: aliases of aliases
multiply (a few lines can stand for billions of nodes), and the rules are walked expanded."""


class _RulesLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # <<: *defaults may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = first_lines.get(key)
            except TypeError:  # an unhashable key: the safe loader refuses it itself
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first})", key_node.start_mark
                )
            first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _load_yaml(text: str) -> Any:
    loader = _RulesLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it past MAX_YAML_NODES, or into itself. An alias
    is its anchor's node again, so sizes are counted once per node and summed per use."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"the document expands to more than {MAX_YAML_NODES:,} nodes (aliases count at each use)",
                    node.start_mark,
                )
        elif id(node) in open_nodes:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it", node.start_mark)
        elif id(node) not in sizes:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _rule(entry: object) -> Rule:
    if not isinstance(entry, dict):
        raise InvalidConfig("each rule is a mapping")
    _only(entry, {"name", "sources", "pattern", "targets", "transform", "description"}, "rule")
    if "pattern" not in entry:
        raise InvalidConfig("a rule needs a pattern")
    sources = entry.get("sources", [])
    if isinstance(sources, str):
        sources = [sources]
    targets = entry.get("targets")
    if not isinstance(targets, list) or not targets:
        raise InvalidConfig("a rule needs a non-empty 'targets' list")
    transform = entry.get("transform")
    if transform is not None:
        if not isinstance(transform, dict):
            raise InvalidConfig("transform is a mapping with 'paths' and 'template'")
        _only(transform, {"paths", "template"}, "transform")
        transform = InputTransform(dict(transform.get("paths") or {}), transform.get("template", ""))
    pattern = entry["pattern"]
    return Rule(
        name=entry.get("name", ""),
        pattern=Pattern(pattern if isinstance(pattern, dict | str) else _not_a_pattern(pattern)),
        targets=tuple(_target(target) for target in targets),
        sources=tuple(sources),
        transform=transform,
        description=str(entry.get("description", "")),
    )


def _not_a_pattern(value: object) -> dict[str, Any]:
    raise InvalidPattern("", f"a pattern is a JSON object, got {type(value).__name__}")


def _target(entry: object) -> Target:
    if not isinstance(entry, dict):
        raise InvalidConfig("each target is a mapping with one of: topic, http, handler")
    kinds = [kind for kind in ("topic", "http", "handler") if kind in entry]
    if len(kinds) != 1:
        raise InvalidConfig("each target names exactly one of: topic, http, handler")
    retry = entry.get("retry", {})
    if not isinstance(retry, dict):
        raise InvalidConfig("retry is a mapping: {attempts, backoff, multiplier, max_backoff}")
    _only(retry, {"attempts", "backoff", "multiplier", "max_backoff"}, "retry")
    if kinds == ["topic"]:  # appended by the router itself, with its group's retries
        _only(entry, {"topic"}, "topic target")
        return TopicTarget(topic=entry["topic"])
    common: dict[str, Any] = {"retry": Retry(**retry), "dead_letter": entry.get("dead_letter")}
    if kinds == ["http"]:
        _only(entry, {"http", "mode", "timeout", "headers", "retry", "dead_letter"}, "HTTP target")
        return HttpTarget(
            url=entry["http"],
            mode=entry.get("mode", "binary"),
            timeout=entry.get("timeout", 5.0),
            headers=_headers(entry.get("headers")),
            **common,
        )
    _only(entry, {"handler", "retry", "dead_letter"}, "handler target")
    return HandlerTarget(handler=import_handler(entry["handler"]), **common)


def _headers(value: object) -> dict[str, str]:
    """The headers as the file gives them: a mapping of names to strings or numbers (the HTTP
    target checks the names and values themselves)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidConfig("headers is a mapping of header names to values")
    headers: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str):
            raise InvalidConfig(f"HTTP header names are strings, got {name!r}")
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            raise InvalidConfig(f"HTTP header {name!r}: the value is a string or a number, got {text!r}")
        headers[name] = str(text)
    return headers


def import_handler(reference: object) -> Handler:
    """`package.module:function` as the function."""
    if not isinstance(reference, str) or reference.count(":") != 1:
        raise InvalidConfig(f"a handler is 'package.module:function', got {reference!r}")
    module_name, attribute = reference.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidConfig(f"cannot import handler module {module_name!r}: {exc}") from exc
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise InvalidConfig(f"{reference!r} is not a callable in {module_name!r}")
    return handler  # type: ignore[no-any-return]


def _only(entry: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = set(entry) - allowed
    if unknown:
        raise InvalidConfig(f"unknown keys in {what}: {', '.join(sorted(map(str, unknown)))}")
