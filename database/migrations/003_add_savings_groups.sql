-- database/migrations/003_add_savings_groups.sql
-- Savings groups with a real-time trigger: every change of current_amount is sent with
-- pg_notify on channel 'group_update' (LISTEN group_update; for WebSocket fan-out).

CREATE TABLE IF NOT EXISTS savings_groups (
    id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    name VARCHAR(255) NOT NULL,
    target_amount DECIMAL(12, 2),
    current_amount DECIMAL(12, 2) DEFAULT 0.00,
    created_by UUID REFERENCES users(id),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP
);

-- Real-time trigger for amount updates
CREATE OR REPLACE FUNCTION notify_group_update()
RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify('group_update', json_build_object(
        'group_id', NEW.id,
        'current_amount', NEW.current_amount
    )::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- CREATE OR REPLACE TRIGGER (PostgreSQL 14+) keeps the migration safe to re-run.
CREATE OR REPLACE TRIGGER group_amount_notify
    AFTER UPDATE OF current_amount ON savings_groups
    FOR EACH ROW EXECUTE FUNCTION notify_group_update();
