-- Inbox: the ids of the messages a consumer has processed, recorded in the same transaction as
-- the effect, so that a redelivered message is recognised and skipped.
create table inbox (
    consumer     text        not null,
    message_id   uuid        not null,
    processed_at timestamptz not null default now(),
    primary key (consumer, message_id)
);

-- Checkpoints: how far each projection has read the global log (the position of the last event
-- it applied; 0 before the first).
create table checkpoints (
    name       text        primary key,
    position   bigint      not null check (position >= 0),
    updated_at timestamptz not null default now()
);
