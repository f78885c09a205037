-- Wakes the projections when events are appended: a notification on `pulsaga_events` at the
-- commit of every transaction that appended (once per transaction), instead of every projection
-- polling the log twenty times a second.
create function events_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('pulsaga_events', '');
    return null;
end
$$;

create trigger events_notify after insert on events
    for each statement execute function events_notify();
