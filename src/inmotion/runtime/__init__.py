"""The runtime: `App` with publish, subscribe, consumer groups, retries, dead letters,
idempotency, lifecycle hooks (`on_startup`, `on_shutdown`), background tasks and metrics.

    from inmotion import App, Context, Retry

    app = App("billing", broker="sqlite:///./inmotion.db")

    @app.subscribe("shop.orders", group="billing", filter="shop.order.*",
                   retry=Retry(attempts=5, backoff=0.2), concurrency=8, idempotent=True)
    async def charge(order: Order, ctx: Context) -> None:   # Order: pydantic, dataclass, Struct...
        await ctx.publish("billing.payments", Payment(order.id), key=order.id, type="billing.charged")

    @app.task                 # a background job: started after start-up, cancelled at shutdown
    async def reconcile() -> None:
        while True:
            await app.clock.sleep(300)   # periodic on the app's clock (FakeClock in tests)
            ...

    app.run_sync()            # or: inmotion run billing.service:app

Events of a partition are handled in order (per key with `concurrency`), committed only once
finished (at-least-once), retried with backoff, then dead-lettered to `<group>.dlq` with the
error in `dlq_*` headers. Processes sharing a SQLite file split partitions through leases in
the same file; `inmotion groups`, `inmotion dlq` and `inmotion replay` inspect and steer them.
"""

from inmotion.runtime.app import App
from inmotion.runtime.deadletter import DeadLetter
from inmotion.runtime.filters import EventFilter, TypeIs, TypePrefix
from inmotion.runtime.handler import Context
from inmotion.runtime.retry import Retry

__all__ = [
    "App",
    "Context",
    "DeadLetter",
    "EventFilter",
    "Retry",
    "TypeIs",
    "TypePrefix",
]
