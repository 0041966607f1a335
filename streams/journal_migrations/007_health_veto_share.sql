-- The policy layer's veto-rate health input (issue 12): the share of the supervisor
-- partition's recent BUY/SELL signals vetoed for model health, on each supervised signal and
-- on the decision made from it. Rows journaled before this migration get the contracts'
-- default (0).

ALTER TABLE signals ADD COLUMN health_veto_share double precision NOT NULL DEFAULT 0;
ALTER TABLE decisions ADD COLUMN health_veto_share double precision NOT NULL DEFAULT 0;
COMMENT ON COLUMN signals.health_veto_share IS
    'share of the partition''s last BUY/SELL signals vetoed for model health (bias, missing or stale model, disagreement)';
