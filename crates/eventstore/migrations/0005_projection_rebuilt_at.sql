-- When each projection's read model was last emptied and replayed, so that a
-- rebuild asked of several replicas at once is done by the first to hold the
-- lease and not again at every later handover.
ALTER TABLE projection_checkpoints ADD COLUMN rebuilt_at timestamptz;
