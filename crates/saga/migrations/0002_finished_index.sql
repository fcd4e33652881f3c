-- The engine deletes completed and compensated sagas once they are past its
-- retention (FAILED ones stay for an operator); this finds them without
-- reading the live ones.
CREATE INDEX saga_instances_finished ON saga_instances (saga_type, finished_at)
    WHERE status IN ('COMPLETED', 'COMPENSATED');
