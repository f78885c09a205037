-- Sagas that ended a while ago, moved out of `sagas` by the coordinator's archiver (their logs
-- move out of the hot event log beside them, into `archived_events`): still read by id. The
-- columns are the sagas table's, in its order, then when the saga was archived.
create table archived_sagas (like sagas including constraints);
alter table archived_sagas
    add primary key (saga_id),
    add column archived_at timestamptz not null default now();
