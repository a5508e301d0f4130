-- Trades in; each symbol's VWAP per minute and the minute's top 3 movers out.
CREATE TABLE trades (
  symbol STRING,
  price DOUBLE,
  quantity BIGINT,
  ts TIMESTAMP_LTZ(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('topic' = 'trading.trades');

CREATE TABLE vwap (
  symbol STRING, window_start TIMESTAMP_LTZ(3), vwap DOUBLE, volume BIGINT, trades BIGINT,
  k STRING METADATA FROM 'key'
) WITH ('topic' = 'trading.vwap');

CREATE TABLE movers (
  window_start TIMESTAMP_LTZ(3), symbol STRING, move_pct DOUBLE, rank BIGINT
) WITH ('topic' = 'trading.movers');

-- volume-weighted average price per symbol per minute
INSERT INTO vwap
SELECT symbol, window_start, SUM(price * quantity) / SUM(quantity), SUM(quantity), COUNT(*), symbol
FROM TABLE(TUMBLE(TABLE trades, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end, symbol;

-- the 3 symbols whose price ranged widest in each minute (Window Top-N)
INSERT INTO movers
SELECT window_start, symbol, move_pct, rownum FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY move_pct DESC) AS rownum
  FROM (
    SELECT window_start, window_end, symbol, ROUND((MAX(price) - MIN(price)) / MIN(price) * 100, 3) AS move_pct
    FROM TABLE(TUMBLE(TABLE trades, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
    GROUP BY window_start, window_end, symbol
  )
) WHERE rownum <= 3;
