-- Without TimescaleDB: plain tables with time indexes.
-- BRIN on the append-mostly, time-ordered high-volume tables (ticks arrive in event-time order
-- per symbol, so block ranges correlate with time and the index stays tiny); btree on
-- (symbol, event_time) where per-symbol history is the usual query.

CREATE INDEX ticks_event_time_brin ON ticks USING brin (event_time);
CREATE INDEX trade_ticks_event_time_brin ON trade_ticks USING brin (event_time);
CREATE INDEX signals_event_time_brin ON signals USING brin (event_time);
CREATE INDEX signals_symbol_time ON signals (symbol, event_time);
CREATE INDEX vetoes_event_time ON vetoes (event_time);
CREATE INDEX vetoes_rule_time ON vetoes (rule, event_time);
CREATE INDEX decisions_symbol_time ON decisions (symbol, event_time);
CREATE INDEX approvals_symbol_time ON approvals (symbol, event_time);
CREATE INDEX rejections_rule_time ON rejections (rule, event_time);
CREATE INDEX orders_symbol_time ON orders (symbol, event_time);
CREATE INDEX fills_order ON fills (order_id);
CREATE INDEX fills_symbol_time ON fills (symbol, event_time);
CREATE INDEX positions_symbol_time ON positions (symbol, event_time);
CREATE INDEX trades_symbol_time ON trades (symbol, event_time);
CREATE INDEX trades_event_time ON trades (event_time);
CREATE INDEX rewards_event_time ON rewards (event_time);
CREATE INDEX model_events_model_time ON model_events (model, event_time);
CREATE INDEX control_commands_event_time ON control_commands (event_time);
