"""What a workflow raises, and what raising reaches its caller as."""

from __future__ import annotations

from inmotion.errors import InmotionError


class WorkflowError(InmotionError):
    """A workflow could not do what was asked (a base class)."""


class WorkflowTimeout(WorkflowError):
    """Raised inside a workflow when `request` or `wait_for` waited `timeout` seconds for
    nothing; the workflow may catch it. Uncaught, it fails the workflow (and compensates)."""


class WorkflowCancelled(WorkflowError):
    """Raised inside a workflow at its next step, sleep or wait after `inmotion workflows
    cancel`: uncaught, the completed steps' undos run."""


class StepFailed(WorkflowError):
    """A step failed on its last attempt (or with an error its retry gives up on)."""

    def __init__(self, step: str, seq: int, error: str) -> None:
        super().__init__(f"step {step!r} (position {seq}) failed: {error}")
        self.step = step
        self.seq = seq
        self.error = error


class ChangedCode(WorkflowError):
    """The recorded history no longer matches the workflow's code: the instance fails rather
    than replaying the wrong steps."""


class WorkflowFailed(WorkflowError):
    """What waiting for an instance's result raises when it did not complete."""

    def __init__(self, key: str, status: str, error: str | None) -> None:
        super().__init__(f"workflow {key} ended {status}: {error}")
        self.key = key
        self.status = status
        self.error = error


class UnknownWorkflow(WorkflowError, LookupError):
    """No workflow (definition or instance) of that name or id."""


class InstanceLost(BaseException):
    """Another worker wrote to the instance first (it owns the instance's shard now): this one
    stops running it. A BaseException, as asyncio's CancelledError, so that a workflow's
    `except Exception` cannot keep a stale worker going."""
