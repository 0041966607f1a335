-- With TimescaleDB: the time-series tables become hypertables (migrate_data: the tables are
-- empty right after 001, but a late conversion would keep its rows); the high-volume market
-- data and signal tables are compressed after a few days (segmented by symbol, so a per-symbol
-- scan decompresses one segment). Retention: only the sampled raw trade ticks are dropped
-- (after 30 days). Timescale measures retention against the wall clock, so any longer policy on
-- signals would silently delete a replay of historical data; business facts (decisions,
-- orders, fills, positions, trades) are never dropped automatically.
-- Chunk interval 1 day for market data and signals, 7 days for the sparse business tables.

SELECT create_hypertable('ticks', 'event_time', chunk_time_interval => interval '1 day', migrate_data => true);
SELECT create_hypertable('trade_ticks', 'event_time', chunk_time_interval => interval '1 day', migrate_data => true);
SELECT create_hypertable('signals', 'event_time', chunk_time_interval => interval '1 day', migrate_data => true);
SELECT create_hypertable('vetoes', 'event_time', chunk_time_interval => interval '7 days', migrate_data => true);
SELECT create_hypertable('decisions', 'event_time', chunk_time_interval => interval '7 days', migrate_data => true);
SELECT create_hypertable('approvals', 'event_time', chunk_time_interval => interval '7 days', migrate_data => true);
SELECT create_hypertable('rejections', 'event_time', chunk_time_interval => interval '7 days', migrate_data => true);
SELECT create_hypertable('orders', 'event_time', chunk_time_interval => interval '7 days', migrate_data => true);
SELECT create_hypertable('fills', 'event_time', chunk_time_interval => interval '7 days', migrate_data => true);
SELECT create_hypertable('positions', 'event_time', chunk_time_interval => interval '7 days', migrate_data => true);
SELECT create_hypertable('trades', 'event_time', chunk_time_interval => interval '7 days', migrate_data => true);
SELECT create_hypertable('rewards', 'event_time', chunk_time_interval => interval '7 days', migrate_data => true);

ALTER TABLE ticks SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol', timescaledb.compress_orderby = 'event_time');
ALTER TABLE trade_ticks SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol', timescaledb.compress_orderby = 'event_time, trade_id');
ALTER TABLE signals SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol', timescaledb.compress_orderby = 'event_time, signal_id');
ALTER TABLE vetoes SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol', timescaledb.compress_orderby = 'event_time, signal_id, ordinal');

SELECT add_compression_policy('ticks', interval '7 days');
SELECT add_compression_policy('trade_ticks', interval '2 days');
SELECT add_compression_policy('signals', interval '7 days');
SELECT add_compression_policy('vetoes', interval '7 days');

SELECT add_retention_policy('trade_ticks', interval '30 days');

CREATE INDEX signals_symbol_time ON signals (symbol, event_time DESC);
CREATE INDEX vetoes_rule_time ON vetoes (rule, event_time DESC);
CREATE INDEX decisions_symbol_time ON decisions (symbol, event_time DESC);
CREATE INDEX approvals_symbol_time ON approvals (symbol, event_time DESC);
CREATE INDEX rejections_rule_time ON rejections (rule, event_time DESC);
CREATE INDEX orders_symbol_time ON orders (symbol, event_time DESC);
CREATE INDEX fills_order ON fills (order_id);
CREATE INDEX fills_symbol_time ON fills (symbol, event_time DESC);
CREATE INDEX positions_symbol_time ON positions (symbol, event_time DESC);
CREATE INDEX trades_symbol_time ON trades (symbol, event_time DESC);
CREATE INDEX model_events_model_time ON model_events (model, event_time);
CREATE INDEX control_commands_event_time ON control_commands (event_time);
