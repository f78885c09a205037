-- An Idempotency-Key claimed through the API: the command id it names (derived from the caller,
-- the route and the key) and a fingerprint of the request body it was first used with, so that
-- the same key with another body is refused instead of silently dropping that command.
create table idempotency_keys (
    command_id uuid primary key,
    fingerprint uuid not null,
    claimed_at timestamptz not null default now()
);
