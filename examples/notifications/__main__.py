"""Notification fan-out: `.venv/bin/python -m examples.notifications [--broker URL]`.

Sign-ups arrive over HTTP from a Node.js backend (`signup.mjs`) through the gateway
(`inmotion serve`, a process of its own). Rules fan each one out to webhooks: an e-mail to
everyone, an SMS to those who gave a phone number, a message to their team's chat. The chat
provider is down: its deliveries are retried, then dead-lettered. Once it is back, an operator
redrives them through the gateway's admin API, and every message arrives.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx

from examples import serving
from examples.notifications.webhooks import Webhooks
from inmotion import App, Retry
from inmotion.gateway import Tokens
from inmotion.log import TopicConfig, connect
from inmotion.patterns import Pattern
from inmotion.routing import Router
from inmotion.routing.rules import HttpTarget, Rule
from inmotion.runtime import logs
from inmotion.testing import eventually

HERE = Path(__file__).resolve().parent
GROUP = "notifications"
CHAT_DLQ = "notifications.chat.dlq"


def rules(webhooks: str) -> list[Rule]:
    """Every sign-up gets an e-mail; one with a phone number an SMS; every one a chat message
    to the team (retried 3 times, then dead-lettered to notifications.chat.dlq)."""
    quick = Retry(attempts=3, backoff=0.1, jitter=False)
    signed_up = {"type": ["user.signed_up"]}
    return [
        Rule(name="email", pattern=Pattern(signed_up), targets=(HttpTarget(url=f"{webhooks}/email", retry=quick),)),
        Rule(
            name="sms",
            pattern=Pattern({**signed_up, "data": {"phone": [{"exists": True}]}}),
            targets=(HttpTarget(url=f"{webhooks}/sms", retry=quick),),
        ),
        Rule(
            name="chat",
            pattern=Pattern(signed_up),
            targets=(HttpTarget(url=f"{webhooks}/chat", retry=quick, dead_letter=CHAT_DLQ),),
        ),
    ]


def say(who: str, text: str) -> None:
    print(f"  {who:<9} {text}", flush=True)


async def run(broker: str) -> int:
    logs.configure("critical")  # the story below tells the retries and dead letters
    with connect(broker) as log:
        if "signups" not in log.list_topics():
            log.create_topic("signups", TopicConfig(partitions=2))
        tokens = Tokens(log)
        names = {grant.name for grant in tokens.list()}
        for name in ("signup-form", "operator"):
            if name in names:
                tokens.revoke(name)
        form_token, _ = tokens.create("signup-form", publish=["signups"])
        operator_token, _ = tokens.create("operator", admin=True)

    webhooks = Webhooks()
    webhooks_url = webhooks.start()
    app = App("notifications", broker, topic_config=TopicConfig(partitions=1))
    Router(app, rules(webhooks_url), group=GROUP, sources=["signups"])
    stop = asyncio.Event()
    routing = asyncio.create_task(app.run(until=stop))
    try:
        async with (
            serving.gateway(broker) as gateway_url,
            httpx.AsyncClient(base_url=gateway_url, timeout=10) as client,
        ):
            say("gateway", f"{gateway_url} (inmotion serve, a process of its own)")

            node = await asyncio.create_subprocess_exec(
                "node", str(HERE / "signup.mjs"), gateway_url, form_token, stdout=asyncio.subprocess.PIPE
            )
            output, _ = await node.communicate()
            if node.returncode != 0:
                raise SystemExit("the Node sign-up form failed")
            for line in output.decode().splitlines():
                say("node", f"POST sign-up {line}")

            await eventually(lambda: webhooks.count("email") == 3 and webhooks.count("sms") == 2, 30, "e-mails, SMS")
            for channel in ("email", "sms"):
                for message in webhooks.received[channel]:
                    say(channel, f"<- {message['user']} ({message['email' if channel == 'email' else 'phone']})")

            def dead_letters() -> list[dict[str, object]]:
                answer = httpx.get(f"{gateway_url}/dlq?topic={CHAT_DLQ}", headers=_bearer(operator_token))
                entries: list[dict[str, object]] = answer.json()["entries"] if answer.status_code == 200 else []
                return entries

            await eventually(lambda: len(dead_letters()) == 3, 30, "the chat messages to be dead-lettered")
            entries = dead_letters()
            say("chat", f"down: {webhooks.refused} tries answered 503, {len(entries)} messages dead-lettered")
            for entry in entries:
                say("dlq", f"{entry['id']}  after {entry['attempts']} attempts: {entry['error_message']}")

            await client.post(f"{webhooks_url}/chat/up")
            answer = await client.post(f"/dlq/{CHAT_DLQ}/redrive", json={}, headers=_bearer(operator_token))
            redriven = answer.json()["redriven"]
            say("operator", f"chat is back: POST /dlq/{CHAT_DLQ}/redrive -> {len(redriven)} redriven")
            await eventually(lambda: webhooks.count("chat") == 3, 30, "the chat messages")
            for message in webhooks.received["chat"]:
                say("chat", f"<- {message['user']} to team {message['team']}")
    finally:
        stop.set()
        await routing
        app.close()
    print(
        f"summary: 3 sign-ups over HTTP from Node: {webhooks.count('email')} e-mails, {webhooks.count('sms')} SMS,"
        f" {webhooks.count('chat')} chat messages ({len(redriven)} dead-lettered while chat was down, then redriven)"
    )
    return 0


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def main() -> None:
    if shutil.which("node") is None:
        raise SystemExit("this example needs node (the sign-up form's backend)")
    serving.main(run, __doc__)


if __name__ == "__main__":
    main()
