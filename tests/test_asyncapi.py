"""`inmotion asyncapi MODULE:APP`: a valid AsyncAPI 3.0 document (checked against the
specification's JSON schema, tests/data) of an app's channels, messages and operations."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pydantic
import pytest

from inmotion import App, Context, Event
from inmotion.runtime.asyncapi import describe
from inmotion.runtime.filters import TypePrefix

SPEC = json.loads((Path(__file__).parent / "data" / "asyncapi-3.0.0.json").read_text())


def valid(document: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SPEC).validate(document)
    for ref in _refs(document):  # every $ref points into the document
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


@dataclasses.dataclass
class Address:
    street: str
    city: str


@dataclasses.dataclass
class OrderPlaced:
    order_id: str
    total: float
    ship_to: Address


class Payment(pydantic.BaseModel):
    payment_id: str
    amount: float
    card: Card | None = None


class Card(pydantic.BaseModel):
    last4: str


Payment.model_rebuild()


class Reading(msgspec.Struct):
    sensor: str
    value: float


def test_an_apps_document_is_valid_asyncapi_with_payload_schemas() -> None:
    with App("shop", "memory://") as app:

        @app.subscribe(["orders", "orders.retry"], group="billing", filter="shop.order.placed")
        async def bill(order: OrderPlaced) -> None: ...

        @app.subscribe("payments", group="ledger", filter=TypePrefix("pay."))
        async def book(payment: Payment) -> None: ...

        @app.subscribe("sensors", group="iot")
        def read(reading: Reading, ctx: Context) -> None: ...

        @app.subscribe("audit", group="audit")
        async def audit(event: Event) -> None: ...

        @app.subscribe("misc", group="misc")
        async def misc(data: dict[str, int]) -> None: ...

        document = describe(app, version="2.1.0")
    valid(document)
    assert document["info"] == {"title": "shop", "version": "2.1.0", "description": "Events that shop consumes."}
    assert "servers" not in document  # memory://
    assert {c["address"] for c in document["channels"].values()} == {
        "orders",
        "orders.retry",
        "payments",
        "sensors",
        "audit",
        "misc",
    }
    operations = document["operations"]
    assert operations["billing.orders"]["action"] == "receive"
    assert operations["billing.orders"]["summary"] == "group billing handles the events of type shop.order.placed"
    assert operations["ledger.payments"]["summary"] == "group ledger handles the events of types pay.*"
    schemas = document["components"]["schemas"]
    assert schemas["OrderPlaced"]["properties"]["ship_to"] == {"$ref": "#/components/schemas/Address"}
    assert schemas["Address"]["required"] == ["street", "city"]
    assert document["components"]["messages"]["Payment"]["payload"]["properties"]["card"]["anyOf"][0] == {
        "$ref": "#/components/schemas/Card"
    }
    assert document["components"]["messages"]["Reading"]["payload"] == {"$ref": "#/components/schemas/Reading"}
    assert document["components"]["messages"]["CloudEvent"]["headers"] == {
        "$ref": "#/components/schemas/CloudEventHeaders"
    }


def test_servers_name_the_log(tmp_path: Path) -> None:
    with App("shop", f"sqlite:///{tmp_path / 'log.db'}") as app:

        @app.subscribe("orders", group="billing")
        async def bill(order: OrderPlaced) -> None: ...

        document = describe(app)
    valid(document)
    assert document["servers"]["embedded"]["protocol"] == "sqlite"
    assert document["servers"]["embedded"]["pathname"] == str(tmp_path / "log.db")


def test_the_command_writes_the_document_of_an_app_with_workflows(tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(
        textwrap.dedent(
            """
            import dataclasses
            from inmotion import App
            from inmotion.workflows import Workflow

            @dataclasses.dataclass
            class OrderPlaced:
                order_id: str
                total: float

            app = App("shop", "memory://")

            @app.subscribe("orders", group="billing")
            async def bill(order: OrderPlaced) -> None: ...

            @app.workflow("order", on="orders", filter="shop.order.placed")
            async def saga(wf: Workflow, order: OrderPlaced) -> None: ...
            """
        )
    )
    command = [sys.executable, "-m", "inmotion", "asyncapi", "service:app"]
    shown = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    document = json.loads(shown.stdout)
    valid(document)
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {"orders", "shop.workflows.inbox"}
    assert set(document["operations"]) == {
        "billing.orders",
        "shop.workflows.shop.workflows.inbox",
        "shop.workflows.order.orders",
    }

    written = subprocess.run(
        [*command, "--output", "api.json"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    assert written.stdout == "wrote api.json: 2 channels, 2 messages\n"
    assert json.loads((tmp_path / "api.json").read_text()) == document


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("nomodule:app", "error: cannot import 'nomodule'"),
        ("service", "error: expected MODULE:APP, e.g. billing.service:app, got 'service'"),
    ],
)
def test_bad_specs_are_clear_errors(tmp_path: Path, spec: str, error: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inmotion", "asyncapi", spec], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith(error)
    assert result.stdout == ""
