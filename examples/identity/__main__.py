"""A user-profile service behind the gateway: `.venv/bin/python -m examples.identity [--broker URL]`.

Commands (register, change e-mail, deactivate) are POSTed as CloudEvents to the gateway
(`inmotion serve`, a process of its own); the service (`examples.identity.service`) decides
each on the user's event-sourced aggregate; the outcomes and the read model of active users
are read back through the gateway as tables (`GET /topics/{topic}/table`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from examples import serving
from examples.identity.service import ACTIVE_USERS, COMMANDS, RESULTS, service
from inmotion.gateway import Tokens
from inmotion.log import TopicConfig, connect
from inmotion.runtime import logs
from inmotion.testing import eventually

COMMANDS_SENT = [
    ("register", {"user": "ada", "name": "Ada Lovelace", "email": "ada@example.com"}),
    ("register", {"user": "alan", "name": "Alan Turing", "email": "alan@example.com"}),
    ("register", {"user": "grace", "name": "Grace Hopper", "email": "grace@example.com"}),
    ("change_email", {"user": "ada", "email": "ada@analytical.engine"}),
    ("deactivate", {"user": "alan", "reason": "left"}),
    ("register", {"user": "ada", "name": "Ada again", "email": "ada@example.com"}),  # refused: registered
    ("change_email", {"user": "alan", "email": "alan@bletchley.park"}),  # refused: deactivated
    ("change_email", {"user": "nobody", "email": "x@example.com"}),  # refused: no such user
    ("change_email", {"user": "grace", "email": "not-an-address"}),  # refused: not an e-mail
]


def say(who: str, text: str) -> None:
    print(f"  {who:<8} {text}", flush=True)


async def run(broker: str) -> int:
    logs.configure("error")
    with connect(broker) as log:
        for topic, config in (
            (COMMANDS, TopicConfig(partitions=2)),
            (RESULTS, TopicConfig(partitions=1, compact=True)),
            (ACTIVE_USERS, TopicConfig(partitions=1, compact=True)),
        ):
            if topic not in log.list_topics():
                log.create_topic(topic, config)
        tokens = Tokens(log)
        if "identity-web" in {grant.name for grant in tokens.list()}:
            tokens.revoke("identity-web")
        token, _ = tokens.create("identity-web", publish=[COMMANDS], subscribe=[RESULTS, ACTIVE_USERS])
    app = service(broker)
    stop = asyncio.Event()
    running = asyncio.create_task(app.run(until=stop))
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with (
            serving.gateway(broker) as gateway_url,
            httpx.AsyncClient(base_url=gateway_url, headers=headers, timeout=10) as client,
        ):
            say("gateway", f"{gateway_url} (inmotion serve)")
            ids: list[str] = []
            for number, (command, data) in enumerate(COMMANDS_SENT, start=1):
                command_id = f"cmd-{number}"
                event = {"specversion": "1.0", "id": command_id, "source": "/profile-page",
                         "type": f"identity.{command}", "partitionkey": data["user"], "data": data}  # fmt: skip
                answer = await client.post(
                    f"/topics/{COMMANDS}/events", json=event, headers={"Content-Type": "application/cloudevents+json"}
                )
                answer.raise_for_status()
                ids.append(command_id)
                say("POST", f"{command_id} {command} {data['user']}")

            results: dict[str, Any] = {}

            def all_answered() -> bool:
                results.update(httpx.get(f"{gateway_url}/topics/{RESULTS}/table", headers=headers).json()["rows"])
                return len(results) == len(ids)

            await eventually(all_answered, 30, "every command's result")
            for command_id in ids:
                outcome = results[command_id]["data"]
                say("result", f"{command_id} " + ("ok" if outcome["ok"] else f"refused: {outcome['error']}"))
            rows = (await client.get(f"/topics/{ACTIVE_USERS}/table")).json()["rows"]
            for user, row in sorted(rows.items()):
                say("active", f"{user}: {row['data']['name']} <{row['data']['email']}>")
    finally:
        stop.set()
        await running
        app.close()
    accepted = sum(1 for command_id in ids if results[command_id]["data"]["ok"])
    print(
        f"summary: {len(ids)} commands over HTTP, {accepted} accepted, {len(ids) - accepted} refused;"
        f" active users: {', '.join(sorted(rows))}"
    )
    return 0


def main() -> None:
    serving.main(run, __doc__)


if __name__ == "__main__":
    main()
