-- The live universe's joins and leaves (universe.events), with the rule's verdict and figures.
-- A few rows per refresh: a plain table on every server (no hypertable needed).

CREATE TABLE universe_changes (
    event_id       text             NOT NULL,
    symbol         text             NOT NULL,
    event_time     timestamptz      NOT NULL,
    event_time_ms  bigint           NOT NULL,
    change         text             NOT NULL,
    verdict        text,
    rank           integer,
    quote_volume   double precision NOT NULL,
    range_ratio    double precision NOT NULL,
    listed_days    double precision,
    universe_size  integer          NOT NULL,
    server_time_ms bigint           NOT NULL,
    reason         text             NOT NULL,
    PRIMARY KEY (event_id, event_time)
);
COMMENT ON TABLE universe_changes IS 'universe.events: a symbol joined or left the live universe';

CREATE INDEX universe_changes_symbol_time ON universe_changes (symbol, event_time);
