"""An app's lifecycle: start-up and shutdown hooks, and background tasks.

Start-up hooks run in registration order before any subscriber joins its group; the first that
fails stops the start with its error (later hooks, subscribers, tasks and shutdown hooks do not
run). Background tasks start once the subscribers are started and are cancelled at shutdown; a
task that raises is logged and ends `App.run` with its error, as a consumer that dies does.
Shutdown hooks run in registration order after the consumers have left their groups, each one
even if another failed. Hooks may be async or plain functions; a plain one runs on the event
loop, where nothing else is running yet (or any more).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from inmotion.errors import InvalidConfig

logger = logging.getLogger("inmotion.runtime")

Hook = Callable[[], Any]
TaskFunction = Callable[[], Awaitable[None]]


def _name(function: object) -> str:
    return str(getattr(function, "__qualname__", None) or getattr(function, "__name__", None) or function)


def _check_no_argument(function: object, what: str) -> None:
    if not callable(function):
        raise InvalidConfig(f"{what} must be a function, got {function!r}")
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: calling it will tell
        return
    required = [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise InvalidConfig(f"{what} {_name(function)} must take no argument, it needs {', '.join(required)}")


class Lifecycle:
    """The hooks and background tasks registered on one app, and the tasks running."""

    def __init__(self) -> None:
        self.startup: list[Hook] = []
        self.shutdown: list[Hook] = []
        self.tasks: list[TaskFunction] = []
        self.running: list[asyncio.Task[None]] = []

    def add_hook(self, hooks: list[Hook], function: Hook, what: str) -> None:
        _check_no_argument(function, what)
        hooks.append(function)

    def add_task(self, function: TaskFunction) -> None:
        _check_no_argument(function, "a background task")
        if not inspect.iscoroutinefunction(function):
            raise InvalidConfig(f"a background task must be an async function, {_name(function)} is not")
        self.tasks.append(function)

    async def start_up(self) -> None:
        for hook in self.startup:
            result = hook()
            if inspect.isawaitable(result):
                await result

    def start_tasks(self) -> None:
        self.running = [asyncio.create_task(self._run(function)) for function in self.tasks]

    @staticmethod
    async def _run(function: TaskFunction) -> None:
        try:
            await function()
        except Exception:
            logger.exception("background task %s failed", _name(function))
            raise

    async def stop_tasks(self) -> list[BaseException]:
        """Cancel the running tasks; the errors of those that had failed."""
        for task in self.running:
            task.cancel()
        results = await asyncio.gather(*self.running, return_exceptions=True)
        self.running = []
        return [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]

    async def shut_down(self) -> list[BaseException]:
        """Run every shutdown hook; the errors of those that failed (each logged)."""
        errors: list[BaseException] = []
        for hook in self.shutdown:
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            except Exception as error:
                logger.exception("shutdown hook %s failed", _name(hook))
                errors.append(error)
        return errors
