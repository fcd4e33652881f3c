-- The relay's housekeeping deletes inbox records past their retention by age.
CREATE INDEX inbox_processed_at ON inbox (processed_at);
