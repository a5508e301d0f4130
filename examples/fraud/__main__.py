"""Fraud rules in continuous SQL: `.venv/bin/python -m examples.fraud [--broker URL] [--kill]`.

Two hours of card payments (300 cards, a payment every few minutes each, at home) with three
planted frauds: a burst of 7 payments in 40 s, 1,250 spent in 8 minutes, payments from two
countries 20 minutes apart. The job (`fraud.sql`, run as `inmotion sql run`) raises an alert
per rule and sliding window that catches one (a fraud shows in several overlapping windows).
With --kill the job is killed with SIGKILL halfway and restarted: the same alerts.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from examples import streaming
from inmotion.events import Event

START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
CARDS = 300
HOURS = 2


def payment(card: str, amount: float, country: str, at: datetime) -> tuple[str, Event]:
    data = {"card": card, "amount": amount, "country": country, "ts": at.isoformat()}
    return "fraud.payments", Event(type="payment", source="/cards", data=data, extensions={"partitionkey": card})


def payments() -> list[tuple[str, Event]]:
    rng = random.Random(7)
    found = []
    for n in range(CARDS):
        card = f"card-{n:04d}"
        at = START + timedelta(seconds=rng.randrange(600))
        while at < START + timedelta(hours=HOURS):
            found.append(payment(card, round(rng.uniform(5, 80), 2), "DE", at))
            at += timedelta(seconds=rng.randrange(300, 1200))
    burst = START + timedelta(minutes=30)
    found += [payment("card-9001", 12.5, "DE", burst + timedelta(seconds=6 * i)) for i in range(7)]
    spree = START + timedelta(minutes=50)
    found += [payment("card-9002", 250.0, "DE", spree + timedelta(minutes=2 * i)) for i in range(5)]
    trip = START + timedelta(minutes=70)
    found += [payment("card-9003", 40.0, "DE", trip), payment("card-9003", 60.0, "US", trip + timedelta(minutes=20))]
    # the closing minutes of every card keep event time moving past the last windows' ends
    found.sort(key=lambda pair: pair[1].data["ts"])
    return found


def example(broker: str, kill: bool) -> int:
    inputs = payments()
    print(f"{len(inputs):,} payments with {CARDS + 3} cards over {HOURS} hours")
    job = Path(__file__).with_name("fraud.sql")
    alerts = streaming.run(broker, job, inputs, ["fraud.alerts"], kill=kill)["fraud.alerts"]
    print(f"alerts: {len(alerts)}")
    for row in sorted(alerts, key=lambda r: (r["card"], r["rule"], r["window_start"])):
        print(f"  {row['card']} {row['rule']:<9} [{row['window_start']}, {row['window_end']}): {row['detail']}")
    return 0


if __name__ == "__main__":
    streaming.main(example, __doc__)
