-- An input's first round trip: the saga's row locked (if the saga has one), then its log read.
-- Every input of a saga takes this lock before anything else, so that its inputs queue one
-- after another. The log is read by a statement of its own once the lock is granted, with a
-- snapshot taken then, so it holds every input committed before; a single statement would read
-- the log as it was before the wait. One row per log entry, in order, or one row without an
-- entry for an empty log.
create function saga_locked_log(p_saga_id uuid)
returns table (row_found boolean, correlation_id uuid, tenant text, actor text, version bigint,
               payload bytea)
language plpgsql as $$
declare
    v_correlation_id uuid;
    v_tenant         text;
    v_actor          text;
    v_found          boolean;
begin
    select s.correlation_id, s.tenant, s.actor into v_correlation_id, v_tenant, v_actor
      from sagas s
     where s.saga_id = p_saga_id
       for update;
    v_found := found;
    return query
        select v_found, v_correlation_id, v_tenant, v_actor, e.version, e.payload
          from (select) one
          left join events e on e.stream_id = 'saga-' || p_saga_id
         order by e.version;
end
$$;
