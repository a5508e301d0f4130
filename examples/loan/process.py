"""The loan process as a workflow.

    loans.applications  loan.applied                  (from the web form)
    loans.tasks         loan.approval.requested       (to the underwriters' queue)
                        loan.approval.reminder        (after a day without a decision)
    loans.decisions     loan.decided                  (an underwriter's decision, correlated
                                                       with the application's events)
    loans.payouts       loan.paid_out

An application with a credit score under 600 is declined at once. Otherwise an underwriter is
asked to decide; after a day without a decision they are reminded, and after three days the
application expires. An approved loan is paid out. The timers are durable: a worker that
restarts (or another one) keeps the same deadlines, and tests run them on a fake clock.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from inmotion.clock import Clock
from inmotion.runtime import App
from inmotion.workflows import Workflow, WorkflowTimeout

FIRST_WAIT = timedelta(days=1)
SECOND_WAIT = timedelta(days=2)


@dataclasses.dataclass
class Application:
    application_id: str
    applicant: str
    amount: int


@dataclasses.dataclass
class CreditReport:
    score: int


@dataclasses.dataclass
class ApprovalRequest:
    application_id: str
    amount: int
    score: int


@dataclasses.dataclass
class Decision:
    approved: bool
    underwriter: str


async def credit_check(application: Application) -> CreditReport:
    """The credit bureau's answer (here: a score derived from the name, for the example)."""
    return CreditReport(550 if application.applicant.startswith("risky") else 720)


async def transfer(application: Application) -> str:
    """The bank transfer of the loan amount; its reference."""
    return f"TR-{application.application_id}"


def loan_app(broker: str, clock: Clock | None = None) -> App:
    app = App("loans", broker, clock=clock)

    @app.workflow(
        "loan",
        on="loans.applications",
        filter="loan.applied",
        id=lambda event: event.data["application_id"],
        listen="loans.decisions",
    )
    async def loan(wf: Workflow, application: Application) -> str:
        report = await wf.step(credit_check, application)
        if report.score < 600:
            return f"declined: credit score {report.score}"
        request = ApprovalRequest(application.application_id, application.amount, report.score)
        await wf.publish("loans.tasks", request, type="loan.approval.requested", key=application.application_id)
        try:
            decided = await wf.wait_for("loans.decisions", type="loan.decided", timeout=FIRST_WAIT)
        except WorkflowTimeout:
            await wf.publish("loans.tasks", request, type="loan.approval.reminder", key=application.application_id)
            try:
                decided = await wf.wait_for("loans.decisions", type="loan.decided", timeout=SECOND_WAIT)
            except WorkflowTimeout:
                return "expired: no decision within 3 days"
        decision = decided.data_as(Decision)
        if not decision.approved:
            return f"declined by {decision.underwriter}"
        reference = await wf.step(transfer, application)
        await wf.publish(
            "loans.payouts",
            {"application_id": application.application_id, "reference": reference},
            type="loan.paid_out",
            key=application.application_id,
        )
        return f"paid out: {reference} (approved by {decision.underwriter})"

    return app
