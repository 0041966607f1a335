-- The promotion gate's evidence (signals.shadow, issue 12): each would-be decision of a
-- candidate model set beside the champion's on one feature row, settled at the label horizon.
-- Written only while a candidate is shadow-scored (at most QT_PROMOTION__MAX_SHADOW_MS): a
-- plain table on every server, indexed for "this shadow's rows in time order".

CREATE TABLE shadow_scores (
    shadow_id            text             NOT NULL,
    symbol               text             NOT NULL,
    event_time           timestamptz      NOT NULL,
    event_time_ms        bigint           NOT NULL,
    decided_ms           bigint           NOT NULL,
    candidate            jsonb            NOT NULL,
    champion             jsonb            NOT NULL,
    votes                jsonb            NOT NULL,
    candidate_action     text             NOT NULL,
    candidate_confidence double precision NOT NULL,
    champion_action      text             NOT NULL,
    champion_confidence  double precision NOT NULL,
    volatility           double precision NOT NULL,
    forward_return       double precision NOT NULL,
    round_trip_cost      double precision NOT NULL,
    candidate_pnl        double precision NOT NULL,
    champion_pnl         double precision NOT NULL,
    PRIMARY KEY (shadow_id, symbol, event_time)
);
CREATE INDEX shadow_scores_event_time ON shadow_scores (event_time);
COMMENT ON TABLE shadow_scores IS 'signals.shadow: a candidate''s would-be decision beside the champion''s, settled (never an order)';
