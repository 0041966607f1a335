-- The policy layer on the contracts (issue 12): the drift level a signal was scored in, the
-- decision made from it, and the mode (with its reasons) an approval was sized in. Rows
-- journaled before this migration get the contracts' defaults.

-- (on TimescaleDB, a compressed hypertable takes a NOT NULL column with a default from 2.6 on)
ALTER TABLE signals ADD COLUMN model_drift text NOT NULL DEFAULT 'STABLE';
ALTER TABLE decisions ADD COLUMN model_drift text NOT NULL DEFAULT 'STABLE';
ALTER TABLE approvals ADD COLUMN trading_mode text NOT NULL DEFAULT 'NORMAL';
ALTER TABLE approvals ADD COLUMN mode_reasons jsonb NOT NULL DEFAULT '[]';
COMMENT ON COLUMN approvals.trading_mode IS 'NORMAL, DEFENSIVE (margin scaled down) or HALT';
