-- Every append maintains every index of `events`. `events_message` served no query. The audit
-- log's time range (`read_all_between`) needs no btree: events are recorded in time order, so a
-- BRIN index, a summary per range of blocks, finds them at a fraction of the upkeep.
drop index events_message;
drop index events_recorded_at;
create index events_recorded_at on events using brin (recorded_at);
