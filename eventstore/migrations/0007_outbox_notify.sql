-- Wakes the relays when messages are queued: a notification on `pulsaga_outbox` at the commit of
-- every transaction that inserted into the outbox (once per transaction), instead of relays
-- polling an empty table.
create function outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('pulsaga_outbox', '');
    return null;
end
$$;

create trigger outbox_notify after insert on outbox
    for each statement execute function outbox_notify();
