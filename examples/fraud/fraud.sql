-- Card payments in, fraud alerts out: three rules over sliding windows.
CREATE TABLE payments (
  card STRING,
  amount DOUBLE,
  country STRING,
  ts TIMESTAMP_LTZ(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('topic' = 'fraud.payments');

CREATE TABLE alerts (
  card STRING, rule STRING, window_start TIMESTAMP_LTZ(3), window_end TIMESTAMP_LTZ(3), detail STRING,
  k STRING METADATA FROM 'key'
) WITH ('topic' = 'fraud.alerts');

-- more than 5 payments with a card within 60 seconds
INSERT INTO alerts
SELECT card, 'burst', window_start, window_end, CONCAT(CAST(COUNT(*) AS STRING), ' payments'), card
FROM TABLE(HOP(TABLE payments, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '60' SECOND))
GROUP BY window_start, window_end, card
HAVING COUNT(*) > 5;

-- over 1,000 spent with a card within 10 minutes
INSERT INTO alerts
SELECT card, 'spend', window_start, window_end, CONCAT(CAST(SUM(amount) AS STRING), ' spent'), card
FROM TABLE(HOP(TABLE payments, DESCRIPTOR(ts), INTERVAL '1' MINUTE, INTERVAL '10' MINUTE))
GROUP BY window_start, window_end, card
HAVING SUM(amount) > 1000;

-- payments from two countries within an hour
INSERT INTO alerts
SELECT card, 'countries', window_start, window_end, CONCAT(MIN(country), ' and ', MAX(country)), card
FROM TABLE(HOP(TABLE payments, DESCRIPTOR(ts), INTERVAL '10' MINUTE, INTERVAL '1' HOUR))
GROUP BY window_start, window_end, card
HAVING MIN(country) <> MAX(country);
