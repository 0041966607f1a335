-- Journal tables: one per business record, keyed by the record's natural (deterministic) id.
--
-- Every primary key ends with event_time: TimescaleDB requires unique keys of a hypertable to
-- contain its time column, and event_time is a function of the record, so the key stays natural
-- and the same ON CONFLICT target works on plain tables and on hypertables.
-- event_time_ms is the contract's exact value (what trades.csv and the topics carry);
-- event_time is the same instant as timestamptz for time-range queries and partitioning.

CREATE TABLE ticks (
    symbol        text             NOT NULL,
    event_time    timestamptz      NOT NULL,
    event_time_ms bigint           NOT NULL,
    open          double precision NOT NULL,
    high          double precision NOT NULL,
    low           double precision NOT NULL,
    close         double precision NOT NULL,
    volume        double precision NOT NULL,
    interval_ms   integer          NOT NULL,
    source        text             NOT NULL,
    PRIMARY KEY (symbol, event_time)
);
COMMENT ON TABLE ticks IS '1-minute klines of market.ticks, as they are (a kline is the aggregate)';

CREATE TABLE trade_ticks (
    symbol         text             NOT NULL,
    trade_id       bigint           NOT NULL,
    event_time     timestamptz      NOT NULL,
    event_time_ms  bigint           NOT NULL,
    price          double precision NOT NULL,
    qty            double precision NOT NULL,
    is_buyer_maker boolean,
    source         text             NOT NULL,
    PRIMARY KEY (symbol, trade_id, event_time)
);
COMMENT ON TABLE trade_ticks IS 'raw trade ticks of market.ticks, sampled: trade_id % N = 0';

CREATE TABLE signals (
    signal_id       text               NOT NULL,
    symbol          text               NOT NULL,
    event_time      timestamptz        NOT NULL,
    event_time_ms   bigint             NOT NULL,
    feature_version text               NOT NULL,
    action          text               NOT NULL,
    confidence      double precision   NOT NULL,
    probabilities   double precision[] NOT NULL,
    close           double precision   NOT NULL,
    atr_pct         double precision   NOT NULL,
    volatility      double precision   NOT NULL,
    vetoed          boolean            NOT NULL,
    final_action    text               NOT NULL,
    votes           jsonb              NOT NULL,
    bias            jsonb              NOT NULL,
    PRIMARY KEY (signal_id, event_time)
);
COMMENT ON TABLE signals IS 'signals.supervised: the ensemble signal, its votes and the verdict';

CREATE TABLE vetoes (
    signal_id     text             NOT NULL,
    ordinal       smallint         NOT NULL,
    symbol        text             NOT NULL,
    event_time    timestamptz      NOT NULL,
    event_time_ms bigint           NOT NULL,
    rule          text             NOT NULL,
    detail        text             NOT NULL,
    observed      double precision,
    threshold     double precision,
    PRIMARY KEY (signal_id, ordinal, event_time)
);
COMMENT ON TABLE vetoes IS 'one row per veto reason of a supervised signal (ordinal = position)';

CREATE TABLE decisions (
    decision_id     text             NOT NULL,
    signal_id       text             NOT NULL,
    symbol          text             NOT NULL,
    event_time      timestamptz      NOT NULL,
    event_time_ms   bigint           NOT NULL,
    side            text             NOT NULL,
    confidence      double precision NOT NULL,
    price           double precision NOT NULL,
    atr_pct         double precision NOT NULL,
    regime          text             NOT NULL,
    strategy        text             NOT NULL,
    size_multiplier double precision NOT NULL,
    risk_fraction   double precision NOT NULL,
    margin_usd      double precision NOT NULL,
    model_versions  jsonb            NOT NULL,
    PRIMARY KEY (decision_id, event_time)
);

CREATE TABLE approvals (
    order_id            text             NOT NULL,
    decision_id         text             NOT NULL,
    symbol              text             NOT NULL,
    event_time          timestamptz      NOT NULL,
    event_time_ms       bigint           NOT NULL,
    approved_margin_usd double precision NOT NULL,
    max_leverage        double precision NOT NULL,
    equity_usd          double precision NOT NULL,
    open_positions      integer          NOT NULL,
    PRIMARY KEY (order_id, event_time)
);
COMMENT ON TABLE approvals IS 'orders.approved (the decision itself is in decisions)';

CREATE TABLE rejections (
    decision_id   text             NOT NULL,
    symbol        text             NOT NULL,
    event_time    timestamptz      NOT NULL,
    event_time_ms bigint           NOT NULL,
    side          text             NOT NULL,
    margin_usd    double precision NOT NULL,
    confidence    double precision NOT NULL,
    rule          text             NOT NULL,
    detail        text             NOT NULL,
    observed      double precision,
    limit_value   double precision,
    PRIMARY KEY (decision_id, event_time)
);
COMMENT ON TABLE rejections IS 'risk.rejections; limit_value is the contract field "limit"';

CREATE TABLE orders (
    order_id        text             NOT NULL,
    decision_id     text             NOT NULL,
    symbol          text             NOT NULL,
    event_time      timestamptz      NOT NULL,
    event_time_ms   bigint           NOT NULL,
    side            text             NOT NULL,
    entry_type      text             NOT NULL,
    entry_price     double precision NOT NULL,
    qty             double precision NOT NULL,
    leverage        double precision NOT NULL,
    margin_usd      double precision NOT NULL,
    legs            jsonb            NOT NULL,
    strategy        text             NOT NULL,
    regime          text             NOT NULL,
    size_multiplier double precision NOT NULL,
    confidence      double precision NOT NULL,
    model_versions  jsonb            NOT NULL,
    PRIMARY KEY (order_id, event_time)
);
COMMENT ON TABLE orders IS 'orders.intents: the entry with its TP ladder, stop and trailing legs';

CREATE TABLE fills (
    fill_id       text             NOT NULL,
    order_id      text             NOT NULL,
    decision_id   text             NOT NULL,
    symbol        text             NOT NULL,
    event_time    timestamptz      NOT NULL,
    event_time_ms bigint           NOT NULL,
    leg_id        text             NOT NULL,
    leg_kind      text             NOT NULL,
    side          text             NOT NULL,
    qty           double precision NOT NULL,
    price         double precision NOT NULL,
    fee           double precision NOT NULL,
    is_partial    boolean          NOT NULL,
    liquidity     text             NOT NULL,
    venue         text             NOT NULL,
    slippage_bps  double precision NOT NULL,
    PRIMARY KEY (fill_id, event_time)
);

CREATE TABLE positions (
    position_id    text             NOT NULL,
    event          text             NOT NULL,
    qty_open       double precision NOT NULL,
    order_id       text             NOT NULL,
    decision_id    text             NOT NULL,
    symbol         text             NOT NULL,
    event_time     timestamptz      NOT NULL,
    event_time_ms  bigint           NOT NULL,
    side           text             NOT NULL,
    entry_price    double precision NOT NULL,
    mark_price     double precision NOT NULL,
    realized_pnl   double precision NOT NULL,
    unrealized_pnl double precision NOT NULL,
    stop_price     double precision,
    fill_id        text,
    -- A position event has no id of its own; two reductions in one bar differ in what stays
    -- open (qty_open falls with every reduction), and replays reproduce the doubles exactly.
    PRIMARY KEY (position_id, event, qty_open, event_time)
);
COMMENT ON TABLE positions IS 'positions.events: opened, increased, reduced, closed';

CREATE TABLE trades (
    trade_id        text             NOT NULL,
    decision_id     text             NOT NULL,
    order_id        text             NOT NULL,
    symbol          text             NOT NULL,
    event_time      timestamptz      NOT NULL,
    event_time_ms   bigint           NOT NULL,
    opened_ms       bigint           NOT NULL,
    side            text             NOT NULL,
    entry_price     double precision NOT NULL,
    exit_price      double precision NOT NULL,
    qty             double precision NOT NULL,
    leverage        double precision NOT NULL,
    margin_usd      double precision NOT NULL,
    gross_pnl       double precision NOT NULL,
    fees            double precision NOT NULL,
    net_pnl         double precision NOT NULL,
    return_pct      double precision NOT NULL,
    holding_ms      bigint           NOT NULL,
    exit_reason     text             NOT NULL,
    strategy        text             NOT NULL,
    regime          text             NOT NULL,
    size_multiplier double precision NOT NULL,
    confidence      double precision NOT NULL,
    model_versions  jsonb            NOT NULL,
    PRIMARY KEY (trade_id, event_time)
);
COMMENT ON TABLE trades IS 'trades.closed; event_time is the close time';

CREATE TABLE rewards (
    reward_id       text             NOT NULL,
    trade_id        text             NOT NULL,
    decision_id     text             NOT NULL,
    symbol          text             NOT NULL,
    event_time      timestamptz      NOT NULL,
    event_time_ms   bigint           NOT NULL,
    learner         text             NOT NULL,
    state           text             NOT NULL,
    action          text             NOT NULL,
    reward          double precision NOT NULL,
    net_pnl         double precision NOT NULL,
    return_pct      double precision NOT NULL,
    regime          text             NOT NULL,
    strategy        text             NOT NULL,
    size_multiplier double precision NOT NULL,
    PRIMARY KEY (reward_id, event_time)
);

CREATE TABLE model_events (
    event_id      text             NOT NULL,
    model         text             NOT NULL,
    version       text             NOT NULL,
    event_time    timestamptz      NOT NULL,
    event_time_ms bigint           NOT NULL,
    kind          text             NOT NULL,
    detail        text             NOT NULL,
    symbol        text,
    metric_name   text,
    metric        double precision,
    PRIMARY KEY (event_id, event_time)
);

CREATE TABLE control_commands (
    command_id    text        NOT NULL,
    command       text        NOT NULL,
    event_time    timestamptz NOT NULL,
    event_time_ms bigint      NOT NULL,
    issued_at_ms  bigint      NOT NULL,
    issued_by     text        NOT NULL,
    reason        text        NOT NULL,
    symbol        text,
    args          jsonb       NOT NULL,
    PRIMARY KEY (command_id, event_time)
);

-- Dead letters have no event time of their own when the input was unreadable; they are not a
-- time series, so they stay a plain table keyed by their id (a hash of the source position).
CREATE TABLE dead_letters (
    dead_letter_id   text    NOT NULL PRIMARY KEY,
    reason           text    NOT NULL,
    error_type       text    NOT NULL,
    stage            text    NOT NULL,
    detail           text    NOT NULL,
    raw              bytea   NOT NULL,
    symbol           text,
    event_time_ms    bigint,
    source_topic     text,
    source_partition integer,
    source_offset    bigint,
    source_file      text,
    source_line      integer,
    raw_key          bytea
);

-- Records the journal itself could not decode (the stage reading them dead-letters them too):
-- kept by their physical position so that nothing the sink committed past is silently dropped.
CREATE TABLE journal_undecodable (
    topic     text    NOT NULL,
    partition integer NOT NULL,
    "offset"  bigint  NOT NULL,
    reason    text    NOT NULL,
    raw       bytea   NOT NULL,
    raw_key   bytea,
    PRIMARY KEY (topic, partition, "offset")
);
