-- Streams and their events. One table of events per service database; the global log order is
-- (transaction_id, position), which readers can follow without skipping late commits.

create table streams (
    stream_id   text        primary key,
    stream_type text        not null,
    version     bigint      not null check (version > 0),
    created_at  timestamptz not null default clock_timestamp()
);

create table events (
    position       bigint      generated always as identity primary key,
    -- Top-level transaction id; rows are only handed to global-log readers once every
    -- transaction that could still commit below them has finished (see read_all).
    transaction_id xid8        not null default pg_current_xact_id(),
    stream_id      text        not null references streams (stream_id),
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
    -- its writer waited for the stream row lock of the earlier one.
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
    v_version  bigint;
    v_position bigint;
    v_inserted integer;
begin
    -- The stream row is the lock that orders the writers of one stream. With an expected version
    -- a retry of an applied append cannot pass it, so ids only need checking once it refuses;
    -- with any version, only the ids can tell a retry from a new append.
    if p_expected is null then
        if eventstore_appended_before(p_stream_id, p_event_ids, p_event_types,
                                      p_schema_versions, p_payloads) = 'all' then
            return query select 'duplicate', s.version, null::bigint
                           from streams s where s.stream_id = p_stream_id;
            return;
        end if;
        insert into streams as s (stream_id, stream_type, version)
             values (p_stream_id, p_stream_type, v_count)
        on conflict (stream_id) do update set version = s.version + v_count
        returning s.version into v_version;
    elsif p_expected = 0 then
        insert into streams (stream_id, stream_type, version)
             values (p_stream_id, p_stream_type, v_count)
        on conflict (stream_id) do nothing
        returning streams.version into v_version;
    else
        update streams s set version = s.version + v_count
         where s.stream_id = p_stream_id and s.version = p_expected
        returning s.version into v_version;
    end if;

    if v_version is null then
        -- Lost the race, or a retry of an append that was applied. This statement sees what
        -- committed while it waited for the lock.
        if eventstore_appended_before(p_stream_id, p_event_ids, p_event_types,
                                      p_schema_versions, p_payloads) = 'all' then
            return query select 'duplicate', s.version, null::bigint
                           from streams s where s.stream_id = p_stream_id;
        else
            return query select 'conflict', coalesce((select s.version from streams s
                                                       where s.stream_id = p_stream_id), 0),
                                null::bigint;
        end if;
        return;
    end if;

    with inserted as (
        insert into events (stream_id, stream_type, version, event_id, event_type,
                            schema_version, payload, message_id, correlation_id, causation_id,
                            saga_id, tenant, actor, traceparent)
        select p_stream_id, p_stream_type, v_version - v_count + n.ord, n.event_id, n.event_type,
               n.schema_version, n.payload, n.message_id, n.correlation_id, n.causation_id,
               n.saga_id, n.tenant, n.actor, n.traceparent
          from unnest(p_event_ids, p_event_types, p_schema_versions, p_payloads, p_message_ids,
                      p_correlation_ids, p_causation_ids, p_saga_ids, p_tenants, p_actors,
                      p_traceparents)
               with ordinality as n (event_id, event_type, schema_version, payload, message_id,
                                     correlation_id, causation_id, saga_id, tenant, actor,
                                     traceparent, ord)
         order by n.ord
        on conflict (event_id) do nothing
        returning position
    )
    select count(*), min(inserted.position) into v_inserted, v_position from inserted;
    if v_inserted < v_count then
        -- An id is taken although the stream was where the writer expected it. Either the whole
        -- batch is already in this stream (a retry that named the version after it: undo the
        -- version bump, it is a no-op) or ids were reused (raises PS001).
        if v_inserted = 0 and eventstore_appended_before(p_stream_id, p_event_ids, p_event_types,
                                                         p_schema_versions, p_payloads) = 'all' then
            update streams s set version = v_version - v_count where s.stream_id = p_stream_id;
            return query select 'duplicate', v_version - v_count, null::bigint;
            return;
        end if;
        perform eventstore_appended_before(p_stream_id, p_event_ids, p_event_types,
                                           p_schema_versions, p_payloads);
        raise exception 'an event id of this batch is already taken' using errcode = 'PS001';
    end if;
    return query select 'appended', v_version, v_position;
end
$$;
