-- Streams their owner is done with (a finished saga's log), moved out of the hot log: still read
-- by stream id, no longer in the global log's scans or its indexes. Each event keeps its position
-- and transaction id, so a cursor (a projection's checkpoint, a reader's `after`) at an archived
-- event stays valid. The columns are the events table's, in its order, then when it moved.
create table archived_events (like events including constraints);
alter table archived_events
    add primary key (position),
    add unique (stream_id, version),
    add column archived_at timestamptz not null default now();

-- The transaction id of the event at a global-log position, hot or archived (null: no such
-- event): where a reader's cursor stands.
create function eventstore_transaction_at(p_position bigint) returns xid8
language sql stable as $$
    select coalesce((select transaction_id from events where position = p_position),
                    (select transaction_id from archived_events where position = p_position))
$$;
