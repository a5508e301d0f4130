"""Rules kept in the log, over HTTP (an `--admin` token): list, put, delete (push
subscriptions: rules with http targets, followed by `inmotion route --rules-from-log`), and a
pattern tester."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inmotion.errors import InmotionError, InvalidConfig, InvalidPattern
from inmotion.events import from_dict
from inmotion.gateway.common import admin_of, in_thread, read_object
from inmotion.gateway.problems import Problem
from inmotion.patterns import Pattern
from inmotion.routing.store import RuleStore


async def list_rules(request: Request) -> Response:
    """The rules stored in the log, which `inmotion route --rules-from-log` follows.
    ---
    summary: List rules
    responses:
      200: {description: "{rules: [rule, as a rules file writes it]}"}
    """
    gateway = admin_of(request)
    entries = await in_thread(RuleStore(gateway.log).entries)
    return JSONResponse({"rules": [entries[name] for name in sorted(entries)]})


async def put_rule(request: Request) -> Response:
    """Create or replace a rule (a push subscription, with an http target); routers that follow
    the log's rules reload.
    ---
    summary: Create or replace a rule
    parameters:
      - {name: name, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [pattern, targets]
            properties:
              sources: {type: array, items: {type: string}}
              pattern: {type: object, description: An EventBridge event pattern}
              targets:
                type: array
                items: {type: object, description: "{topic: T} or {http: URL, mode, timeout, retry, dead_letter}"}
              transform: {type: object, description: "{paths: {...}, template: ...}"}
              description: {type: string}
    responses:
      200: {description: "The rule as stored"}
      400: {description: An invalid rule (the problem names what), or a handler target}
      404: {description: A topic it names does not exist}
    """
    gateway = admin_of(request)
    name = request.path_params["name"]
    entry = await read_object(request)
    if entry.get("name", name) != name:
        raise Problem(400, f"the rule's name {entry['name']!r} is not the {name!r} of its URL")
    entry["name"] = name
    try:
        rule = await in_thread(RuleStore(gateway.log).put, entry)
    except (InvalidConfig, InvalidPattern) as exc:
        raise Problem(400, str(exc)) from None
    return JSONResponse({"rule": entry, "targets": [target.describe() for target in rule.targets]})


async def delete_rule(request: Request) -> Response:
    """Delete a rule; routers that follow the log's rules reload without it.
    ---
    summary: Delete a rule
    parameters:
      - {name: name, in: path, required: true, schema: {type: string}}
    responses:
      204: {description: Deleted}
      404: {description: No such rule}
    """
    gateway = admin_of(request)
    try:
        await in_thread(RuleStore(gateway.log).delete, request.path_params["name"])
    except InvalidConfig as exc:
        raise Problem(404, str(exc)) from None
    return Response(status_code=204)


async def test_pattern(request: Request) -> Response:
    """Does an event pattern match an event, and why?
    ---
    summary: Test a rule pattern
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [pattern, event]
            properties:
              pattern: {type: object, description: An EventBridge event pattern}
              event: {type: object, description: A CloudEvent (or any JSON object)}
    responses:
      200: {description: "{match, explanation: [lines]}"}
      400: {description: An invalid pattern}
    """
    admin_of(request)
    document = await read_object(request)
    if "pattern" not in document or "event" not in document:
        raise Problem(400, 'send {"pattern": {...}, "event": {...}}')
    try:
        pattern = Pattern(document["pattern"])
        event = document["event"]
        if isinstance(event, dict) and "specversion" in event:
            from_dict(event)  # a CloudEvent must be a valid one
        return JSONResponse({"match": pattern.matches(event), "explanation": pattern.explain(event)})
    except InmotionError as exc:
        raise Problem(400, str(exc)) from None


routes = [
    Route("/rules", list_rules, methods=["GET"]),
    Route("/rules/test", test_pattern, methods=["POST"]),
    Route("/rules/{name}", put_rule, methods=["PUT"]),
    Route("/rules/{name}", delete_rule, methods=["DELETE"]),
]
