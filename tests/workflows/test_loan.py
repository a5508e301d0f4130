"""examples/loan on a fake clock: approval within a day, after a reminder, never (expired),
declined by credit score, and declined by the underwriter."""

from __future__ import annotations

import asyncio
from pathlib import Path

from examples.loan.process import Application, Decision, loan_app

from inmotion import Event
from inmotion.clock import FakeClock
from inmotion.testing import eventually

from .test_workflows import running, status

HOUR = 3600.0


def test_the_loan_process(tmp_path: Path) -> None:
    clock = FakeClock(autojump=False)
    tasks: list[Event] = []
    payouts: list[Event] = []

    async def scenario() -> None:
        with loan_app(f"sqlite:///{tmp_path / 'loans.db'}", clock) as app:

            @app.subscribe("loans.tasks", group="underwriters")
            async def queue(task: Event) -> None:
                tasks.append(task)

            @app.subscribe("loans.payouts", group="accounting")
            async def book(payout: Event) -> None:
                payouts.append(payout)

            async def apply(application_id: str, applicant: str) -> None:
                await app.publish(
                    "loans.applications", Application(application_id, applicant, 5000), type="loan.applied"
                )

            async def decide(application_id: str, approved: bool) -> None:
                (task,) = [t for t in tasks if t.data["application_id"] == application_id][:1]
                decision = Decision(approved, "ann")
                correlated = {"correlationid": str(task.extensions["correlationid"]), "causationid": task.id}
                await app.publish("loans.decisions", decision, type="loan.decided", extensions=correlated)

            def requested(kind: str) -> list[str]:
                return sorted(t.data["application_id"] for t in tasks if t.type == f"loan.approval.{kind}")

            async with running(app):
                for application_id, applicant in [("a1", "bob"), ("a2", "cid"), ("a3", "dee"), ("a4", "risky rob")]:
                    await apply(application_id, applicant)
                await eventually(lambda: requested("requested") == ["a1", "a2", "a3"], what="three approval tasks")
                # a4's workflow ends on its own, maybe after the others' tasks are out: awaited, not assumed
                await eventually(lambda: status(app, "loan/a4") == "completed", what="a4 declined")
                assert await app.workflows.handle("loan/a4").result(10) == "declined: credit score 550"

                clock.advance(12 * HOUR)
                await decide("a1", approved=True)
                assert await app.workflows.handle("loan/a1").result(10) == "paid out: TR-a1 (approved by ann)"

                clock.advance(12 * HOUR)  # a day without a decision for a2 and a3: reminders
                await eventually(lambda: requested("reminder") == ["a2", "a3"], what="two reminders")
                await eventually(lambda: status(app, "loan/a2") == status(app, "loan/a3") == "waiting", what="waits")
                clock.advance(HOUR)
                await decide("a2", approved=False)
                assert await app.workflows.handle("loan/a2").result(10) == "declined by ann"

                clock.advance(2 * 24 * HOUR)  # three days in all: a3 expires
                assert await app.workflows.handle("loan/a3").result(10) == "expired: no decision within 3 days"
                await eventually(lambda: len(payouts) == 1)

    asyncio.run(scenario())
    assert [p.data for p in payouts] == [{"application_id": "a1", "reference": "TR-a1"}]
