-- saga_locked_log also says whether a saga without a row was archived: an input that finds no
-- row (every start, and an answer for an unknown saga) asked that in a round trip of its own.
drop function saga_locked_log(uuid);

create function saga_locked_log(p_saga_id uuid)
returns table (row_found boolean, archived boolean, correlation_id uuid, tenant text,
               actor text, version bigint, payload bytea)
language plpgsql as $$
declare
    v_correlation_id uuid;
    v_tenant         text;
    v_actor          text;
    v_found          boolean;
    v_archived       boolean := false;
begin
    select s.correlation_id, s.tenant, s.actor into v_correlation_id, v_tenant, v_actor
      from sagas s
     where s.saga_id = p_saga_id
       for update;
    v_found := found;
    if not v_found then
        v_archived := exists (select 1 from archived_sagas a where a.saga_id = p_saga_id);
    end if;
    return query
        select v_found, v_archived, v_correlation_id, v_tenant, v_actor, e.version, e.payload
          from (select) one
          left join events e on e.stream_id = 'saga-' || p_saga_id
         order by e.version;
end
$$;
