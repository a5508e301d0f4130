"""Sensor readings through continuous SQL: `.venv/bin/python -m examples.iot [--broker URL] [--kill]`.

200 sensors report every second for two minutes (one of them stops after 40 s, one overheats
for a few seconds); the job (`iot.sql`, run as `inmotion sql run`) gives each sensor's 5-second
average and maximum, an alert for each reading above 80 degrees and one for a sensor silent
for 30 s. With --kill the job is killed with SIGKILL halfway and restarted: the same results.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from examples import streaming
from inmotion.events import Event

START = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
SENSORS = 200
SECONDS = 120
SILENT, SILENT_AFTER = "sensor-007", 40
HOT, HOT_FROM, HOT_TO = "sensor-042", 60, 64


def readings() -> list[tuple[str, Event]]:
    rng = random.Random(42)
    events = []
    for second in range(SECONDS):
        for n in range(SENSORS):
            sensor = f"sensor-{n:03d}"
            if sensor == SILENT and second >= SILENT_AFTER:
                continue
            hot = sensor == HOT and HOT_FROM <= second < HOT_TO
            temperature = round((85.0 if hot else 20.0) + rng.uniform(-2, 2), 1)
            at = START + timedelta(seconds=second, milliseconds=rng.randrange(1000))
            data = {"sensor": sensor, "temperature": temperature, "ts": at.isoformat()}
            reading = Event(
                type="iot.reading", source=f"/sensors/{sensor}", data=data, extensions={"partitionkey": sensor}
            )
            events.append(("iot.readings", reading))
    return events


def example(broker: str, kill: bool) -> int:
    inputs = readings()
    print(f"{len(inputs):,} readings from {SENSORS} sensors over {SECONDS} s")
    found = streaming.run(
        broker, Path(__file__).with_name("iot.sql"), inputs, ["iot.averages", "iot.alerts"], kill=kill
    )
    averages, alerts = found["iot.averages"], found["iot.alerts"]
    print(f"averages: {len(averages):,} (a sensor's 5 s window once the watermark passes it), for example")
    for row in sorted(averages, key=lambda r: (r["window_start"], r["sensor"]))[:3]:
        figures = f"avg {row['avg_temperature']:.2f}, max {row['max_temperature']}, {row['readings']} readings"
        print(f"  {row['sensor']} {row['window_start']}: {figures}")
    print(f"alerts: {len(alerts)}")
    for row in sorted(alerts, key=lambda r: (r["at"], r["sensor"])):
        print(f"  {row['type']:<16} {row['sensor']} at {row['at']}: {row['detail']}")
    return 0


if __name__ == "__main__":
    streaming.main(example, __doc__)
