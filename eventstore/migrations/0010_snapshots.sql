-- The latest snapshot of a long stream: its owner's state folded up to `version`, in the owner's
-- encoding, named by `kind` (a new encoding is a new kind; a snapshot of another kind is passed
-- over and the stream folded from its start). Only ever a shortcut: the events decide.
create table snapshots (
    stream_id text        primary key,
    kind      text        not null,
    version   bigint      not null check (version > 0),
    state     bytea       not null,
    taken_at  timestamptz not null default now()
);
