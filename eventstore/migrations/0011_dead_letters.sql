-- Messages a consumer gave up on, recorded in the transaction that also queues them for the
-- dead-letter topic (`<topic>-<subscription>-DLQ`): the index operators list, inspect and re-drive
-- them by. A redelivery of a message already dead-lettered (its acknowledgement lost) finds its
-- row and is not recorded or published twice. Re-driving queues the original message on its topic
-- again and records who did it and why; a re-driven message that fails again is a new row.
create table dead_letters (
    id                uuid        primary key,
    topic             text        not null,
    subscription      text        not null,
    -- On the original topic, as Pulsar's clients write it: ledger:entry:partition:batch.
    origin_message_id text        not null,
    key               text        not null,
    payload           bytea       not null,
    -- The original message's properties.
    properties        jsonb       not null,
    -- The payload decoded, or null when it could not be.
    body              jsonb,
    -- undecodable, permanent or attempts_exhausted.
    cause             text        not null,
    error             text        not null,
    attempts          integer     not null,
    dead_lettered_at  timestamptz not null default clock_timestamp(),
    redriven_at       timestamptz,
    redriven_by       text,
    redrive_reason    text,
    unique (topic, subscription, origin_message_id)
);

create index dead_letters_newest on dead_letters (dead_lettered_at desc, id desc);
