-- The policy layer's mode changes as events of their own (policy.modes, issue 12): each change
-- of the portfolio's trading mode with its reasons and the record that caused it.

CREATE TABLE mode_changes (
    event_id        text             NOT NULL,
    event_time      timestamptz      NOT NULL,
    event_time_ms   bigint           NOT NULL,
    mode            text             NOT NULL,
    previous        text             NOT NULL,
    reasons         jsonb            NOT NULL,
    cause           text             NOT NULL,
    equity_usd      double precision NOT NULL,
    peak_equity_usd double precision NOT NULL,
    drawdown        double precision NOT NULL,
    PRIMARY KEY (event_id, event_time)
);
COMMENT ON TABLE mode_changes IS 'policy.modes: the portfolio''s trading mode changed (NORMAL, DEFENSIVE, HALT)';
