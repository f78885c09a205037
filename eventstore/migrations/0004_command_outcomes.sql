-- The outcome of every command a service handled, written in the transaction that handled it, so
-- that "what happened to command X" has an answer even when the command changed nothing.
create table command_outcomes (
    command_id   uuid        primary key,
    command_type text        not null,
    aggregate_id text        not null,
    outcome      text        not null check (outcome in ('succeeded', 'already_applied', 'rejected')),
    code         text,
    reason       text,
    recorded_at  timestamptz not null default now()
);
