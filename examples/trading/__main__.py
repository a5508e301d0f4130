"""Market data through continuous SQL: `.venv/bin/python -m examples.trading [--broker URL] [--kill]`.

Ten minutes of trades in 20 symbols (random walks; a few trades a second each); the job
(`trading.sql`, run as `inmotion sql run`) gives each symbol's volume-weighted average price
per minute and, per minute, the 3 symbols whose price ranged widest. With --kill the job is
killed with SIGKILL halfway and restarted: the same results.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from examples import streaming
from inmotion.events import Event

START = datetime(2026, 12, 4, 14, 30, tzinfo=UTC)
SYMBOLS = ["AAPL", "ABNB", "AMD", "AMZN", "ASML", "AVGO", "COST", "CRM", "GOOG", "INTC",
           "META", "MSFT", "NFLX", "NVDA", "ORCL", "PEP", "QCOM", "SAP", "TSLA", "UBER"]  # fmt: skip
MINUTES = 10


def trades() -> list[tuple[str, Event]]:
    rng = random.Random(11)
    prices = {symbol: rng.uniform(50, 500) for symbol in SYMBOLS}
    found = []
    at = START
    while at < START + timedelta(minutes=MINUTES):
        symbol = rng.choice(SYMBOLS)
        prices[symbol] *= 1 + rng.gauss(0, 0.002)
        data = {
            "symbol": symbol,
            "price": round(prices[symbol], 2),
            "quantity": rng.randrange(1, 500),
            "ts": at.isoformat(),
        }
        found.append(("trading.trades", Event(type="trade", source="/exchange", data=data,
                                               extensions={"partitionkey": symbol})))  # fmt: skip
        at += timedelta(milliseconds=rng.randrange(5, 30))
    return found


def example(broker: str, kill: bool) -> int:
    inputs = trades()
    print(f"{len(inputs):,} trades in {len(SYMBOLS)} symbols over {MINUTES} minutes")
    job = Path(__file__).with_name("trading.sql")
    found = streaming.run(broker, job, inputs, ["trading.vwap", "trading.movers"], kill=kill)
    vwap, movers = found["trading.vwap"], found["trading.movers"]
    print(f"VWAP: {len(vwap)} (symbol, minute) figures, for example")
    for row in sorted(vwap, key=lambda r: (r["window_start"], r["symbol"]))[:3]:
        print(f"  {row['symbol']:<5} {row['window_start']}: {row['vwap']:.2f} on {row['volume']:,} shares")
    print("top 3 movers per minute (price range in the minute):")
    for row in sorted(movers, key=lambda r: (r["window_start"], r["rank"])):
        print(f"  {row['window_start']} #{row['rank']} {row['symbol']:<5} {row['move_pct']:.3f}%")
    return 0


if __name__ == "__main__":
    streaming.main(example, __doc__)
