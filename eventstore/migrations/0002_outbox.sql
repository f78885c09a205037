-- Messages to publish, written in the same transaction as the events that caused them. Relays
-- lease rows (see outbox.rs for how per-key order survives several relays) and mark them
-- published once the broker has confirmed them. Published rows are kept for inspection.
create table outbox (
    id           bigint      generated always as identity primary key,
    topic        text        not null,
    key          text        not null,
    payload      bytea       not null,
    properties   jsonb       not null default '{}',
    created_at   timestamptz not null default clock_timestamp(),
    attempts     integer     not null default 0,
    lease_owner  text,
    lease_until  timestamptz,
    published_at timestamptz
);

create index outbox_pending on outbox (id) where published_at is null;
create index outbox_pending_by_key on outbox (key, id) where published_at is null;
