"""Workflow instances over HTTP (an `--admin` token): list, describe, cancel and retry them,
as `inmotion workflows` does (both through `inmotion.workflows.admin`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inmotion.errors import InvalidConfig
from inmotion.gateway.common import admin_of, in_thread, read_object
from inmotion.gateway.problems import Problem
from inmotion.workflows import admin as workflows
from inmotion.workflows.store import STATUSES, Entry, Instance

if TYPE_CHECKING:
    from inmotion.gateway.app import Gateway


def _instances(gateway: Gateway, statuses: list[str], limit: int) -> list[dict[str, object]]:
    return [workflows.summary(i) for i in gateway.workflows().instances(statuses=statuses, limit=limit)]


async def list_workflows(request: Request) -> Response:
    """Workflow instances, oldest first.
    ---
    summary: List workflow instances
    parameters:
      - {name: status, in: query, required: false, schema: {type: string}, description: "Repeatable"}
      - {name: limit, in: query, required: false, schema: {type: integer, default: 1000}}
    responses:
      200:
        description: "{instances: [{key, workflow, id, status, correlation, created, updated, wake, error, steps}]}"
      400: {description: An unknown status}
    """
    gateway = admin_of(request)
    statuses = request.query_params.getlist("status") or list(STATUSES)
    unknown = sorted(set(statuses) - set(STATUSES))
    if unknown:
        raise Problem(400, f"unknown status {', '.join(unknown)}: use {', '.join(STATUSES)}")
    limit = request.query_params.get("limit", "1000")
    if not limit.isdigit() or not 0 < int(limit) <= 100_000:
        raise Problem(400, f"limit must be between 1 and 100000, got {limit!r}")
    return JSONResponse({"instances": await in_thread(_instances, gateway, statuses, int(limit))})


async def describe_workflow(request: Request) -> Response:
    """A workflow instance with its input, result and whole history.
    ---
    summary: Describe a workflow instance
    parameters:
      - {name: key, in: path, required: true, schema: {type: string}, description: "<workflow>/<id>, or the id"}
    responses:
      200: {description: The instance and its history}
      404: {description: No such instance}
    """
    gateway = admin_of(request)
    found = await in_thread(_instance, gateway, request.path_params["key"])
    return JSONResponse(workflows.description(*found))


async def request_workflow(request: Request) -> Response:
    """Cancel an active instance or retry a failed one (a worker of its app carries it out).
    ---
    summary: Cancel or retry a workflow instance
    parameters:
      - {name: key, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [request], properties: {request: {type: string, enum: [cancel, retry]}}}
    responses:
      202: {description: Requested}
      404: {description: No such instance}
      409: {description: The instance's status does not allow it}
    """
    gateway = admin_of(request)
    wanted = (await read_object(request)).get("request")
    if wanted not in workflows.REQUESTS:
        raise Problem(400, 'send {"request": "cancel"} or {"request": "retry"}')
    instance, entries = await in_thread(_instance, gateway, request.path_params["key"])
    try:
        await in_thread(workflows.ask, gateway.log, instance, entries, wanted, "inmotion.gateway")
    except InvalidConfig as exc:
        raise Problem(409, str(exc)) from None
    return JSONResponse({"key": instance.key, "requested": wanted}, status_code=202)


def _instance(gateway: Gateway, key: str) -> tuple[Instance, list[Entry]]:
    try:
        return workflows.find(gateway.workflows(), key)
    except workflows.UnknownInstance as exc:
        raise Problem(404, str(exc)) from None
    except InvalidConfig as exc:
        raise Problem(400, str(exc)) from None


routes = [
    Route("/workflows", list_workflows),
    Route("/workflows/{key:path}", describe_workflow, methods=["GET"]),
    Route("/workflows/{key:path}", request_workflow, methods=["POST"]),
]
