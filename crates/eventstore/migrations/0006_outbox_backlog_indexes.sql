-- While a broker is away its messages wait and the relay skips them: the
-- pending index carries the destination, so skipping a large backlog reads
-- the index alone, not every waiting row.
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (partition, sequence) INCLUDE (destination)
    WHERE published_at IS NULL AND parked_at IS NULL;

-- Parked rows are deleted after their retention.
CREATE INDEX outbox_parked ON outbox (parked_at)
    WHERE parked_at IS NOT NULL;
