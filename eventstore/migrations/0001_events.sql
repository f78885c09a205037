-- The events of every stream of one service. A stream is its events: unique (stream_id, version)
-- is the optimistic-concurrency check, so an append is one insert. The global log order is
-- (transaction_id, position), which readers can follow without skipping late commits.

create table events (
    position       bigint      generated always as identity primary key,
    -- Top-level transaction id; rows are only handed to global-log readers once every
    -- transaction that could still commit below them has finished (see read_all).
    transaction_id xid8        not null default pg_current_xact_id(),
    stream_id      text        not null,
    stream_type    text        not null,
    version        bigint      not null check (version > 0),
    event_id       uuid        not null unique,
    event_type     text        not null,
    schema_version integer     not null,
    payload        bytea       not null,
    message_id     uuid,
    correlation_id uuid,
    causation_id   uuid,
    saga_id        uuid,
    tenant         text,
    actor          text,
    traceparent    text,
    -- clock_timestamp(), not now(): a later version of a stream is always recorded later, because
    -- its writer either inserted after the earlier one committed or waited on it in the index.
    recorded_at    timestamptz not null default clock_timestamp(),
    unique (stream_id, version)
);

create index events_global_order on events (transaction_id, position);
create index events_correlation on events (correlation_id) where correlation_id is not null;
create index events_message on events (message_id) where message_id is not null;
create index events_recorded_at on events (recorded_at);

-- Whether the events with these ids were appended before: 'none' of them, or 'all' of them with
-- this content in this stream (a retried append). Anything in between is a client reusing ids for
-- other content: raised as SQLSTATE PS001 with the event id as detail, which aborts the transaction.
-- Only the event's own data is compared: a retry may carry new metadata (another traceparent).
create function eventstore_appended_before(
    p_stream_id       text,
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_payloads        bytea[]
) returns text
language plpgsql as $$
declare
    v_existing integer;
    v_changed  uuid;
    v_taken    uuid;
begin
    select count(*),
           (array_agg(n.event_id) filter (
               where e.stream_id <> p_stream_id or e.event_type <> n.event_type
                  or e.schema_version <> n.schema_version or e.payload <> n.payload))[1],
           (array_agg(n.event_id))[1]
      into v_existing, v_changed, v_taken
      from unnest(p_event_ids, p_event_types, p_schema_versions, p_payloads)
           as n (event_id, event_type, schema_version, payload)
      join events e on e.event_id = n.event_id;
    if v_existing = 0 then
        return 'none';
    elsif v_changed is null and v_existing = cardinality(p_event_ids) then
        return 'all';
    end if;
    raise exception 'event % was already appended with different content or in another batch',
        coalesce(v_changed, v_taken)
        using errcode = 'PS001', detail = coalesce(v_changed, v_taken)::text;
end
$$;

-- Appends a batch to one stream in one round trip.
--   p_expected: null = any version, 0 = the stream must not exist, n = the stream is at version n.
-- Returns one row: outcome 'appended' (version = the new stream version, first_position = the
-- position of the first event), 'duplicate' (these exact events were appended before: a no-op)
-- or 'conflict' (version = the actual stream version, 0 if absent). Reused ids raise PS001.
create function eventstore_append(
    p_stream_id       text,
    p_stream_type     text,
    p_expected        bigint,
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_payloads        bytea[],
    p_message_ids     uuid[],
    p_correlation_ids uuid[],
    p_causation_ids   uuid[],
    p_saga_ids        uuid[],
    p_tenants         text[],
    p_actors          text[],
    p_traceparents    text[]
) returns table (outcome text, version bigint, first_position bigint)
language plpgsql as $$
declare
    v_count    integer := cardinality(p_event_ids);
    v_base     bigint  := p_expected;
    v_inserted integer;
    v_position bigint;
begin
    loop
        if v_base is null then
            v_base := coalesce((select max(e.version) from events e
                                 where e.stream_id = p_stream_id), 0);
        elsif v_base > 0 and not exists (select 1 from events e where e.stream_id = p_stream_id
                                                                  and e.version = v_base) then
            -- The stream is behind what the writer expects; appending would leave a gap.
            return query select 'conflict', coalesce((select max(e.version) from events e
                                                       where e.stream_id = p_stream_id), 0),
                                null::bigint;
            return;
        end if;

        -- A taken (stream_id, version) means another writer got there first; a taken event_id
        -- means these events may be in already. Either way nothing is inserted and nothing aborts:
        -- a concurrent writer of the same version is waited for, then counted as a conflict.
        with inserted as (
            insert into events (stream_id, stream_type, version, event_id, event_type,
                                schema_version, payload, message_id, correlation_id, causation_id,
                                saga_id, tenant, actor, traceparent)
            select p_stream_id, p_stream_type, v_base + n.ord, n.event_id, n.event_type,
                   n.schema_version, n.payload, n.message_id, n.correlation_id, n.causation_id,
                   n.saga_id, n.tenant, n.actor, n.traceparent
              from unnest(p_event_ids, p_event_types, p_schema_versions, p_payloads,
                          p_message_ids, p_correlation_ids, p_causation_ids, p_saga_ids,
                          p_tenants, p_actors, p_traceparents)
                   with ordinality as n (event_id, event_type, schema_version, payload,
                                         message_id, correlation_id, causation_id, saga_id,
                                         tenant, actor, traceparent, ord)
             order by n.ord
            on conflict do nothing
            returning position
        )
        select count(*), min(inserted.position) into v_inserted, v_position from inserted;

        if v_inserted = v_count then
            return query select 'appended', v_base + v_count, v_position;
            return;
        elsif v_inserted > 0 then
            -- Part of the batch went in around a taken id: a reused id (raises PS001).
            perform eventstore_appended_before(p_stream_id, p_event_ids, p_event_types,
                                               p_schema_versions, p_payloads);
            raise exception 'an event id of this batch is already taken' using errcode = 'PS001';
        elsif eventstore_appended_before(p_stream_id, p_event_ids, p_event_types,
                                         p_schema_versions, p_payloads) = 'all' then
            return query select 'duplicate', coalesce((select max(e.version) from events e
                                                        where e.stream_id = p_stream_id), 0),
                                null::bigint;
            return;
        elsif p_expected is not null then
            return query select 'conflict', coalesce((select max(e.version) from events e
                                                       where e.stream_id = p_stream_id), 0),
                                null::bigint;
            return;
        end if;
        -- Any version, and another writer took the next one: go again from the new end.
        v_base := null;
    end loop;
end
$$;
