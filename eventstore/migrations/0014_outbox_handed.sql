-- Messages a process's transaction writes already leased to its own relay are handed to that
-- relay in memory once the transaction commits (outbox.rs): no relay needs waking for them. The
-- notification is raised only for rows written free. (Every notifying commit also queues behind
-- the others on PostgreSQL's notification lock.)
create or replace function outbox_notify() returns trigger language plpgsql as $$
begin
    if exists (select 1 from queued where lease_owner is null) then
        perform pg_notify('pulsaga_outbox', '');
    end if;
    return null;
end
$$;

drop trigger outbox_notify on outbox;

create trigger outbox_notify after insert on outbox
    referencing new table as queued
    for each statement execute function outbox_notify();
