-- Sensor readings in, per-sensor 5-second figures and alerts out.
CREATE TABLE readings (
  sensor STRING,
  temperature DOUBLE,
  ts TIMESTAMP_LTZ(3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH ('topic' = 'iot.readings', 'key.fields' = 'sensor');  -- keyed by sensor: the job can run --split

CREATE TABLE averages (
  sensor STRING, window_start TIMESTAMP_LTZ(3), window_end TIMESTAMP_LTZ(3),
  avg_temperature DOUBLE, max_temperature DOUBLE, readings BIGINT,
  k STRING METADATA FROM 'key'
) WITH ('topic' = 'iot.averages');

CREATE TABLE alerts (
  sensor STRING, at TIMESTAMP_LTZ(3), detail STRING,
  kind STRING METADATA FROM 'type', k STRING METADATA FROM 'key'
) WITH ('topic' = 'iot.alerts');

-- each sensor's average and maximum every 5 seconds
INSERT INTO averages
SELECT sensor, window_start, window_end, AVG(temperature), MAX(temperature), COUNT(*), sensor
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '5' SECOND))
GROUP BY window_start, window_end, sensor;

-- a reading above 80 degrees
INSERT INTO alerts
SELECT sensor, ts, CONCAT('temperature ', CAST(temperature AS STRING)), 'iot.alert.hot', sensor
FROM readings WHERE temperature > 80;

-- a sensor silent for 30 seconds: its session of readings ends
INSERT INTO alerts
SELECT sensor, MAX(ts), CONCAT('silent after ', CAST(COUNT(*) AS STRING), ' readings'), 'iot.alert.silent', sensor
FROM TABLE(SESSION(TABLE readings PARTITION BY sensor, DESCRIPTOR(ts), INTERVAL '30' SECOND))
GROUP BY window_start, window_end, sensor;
