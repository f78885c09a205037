-- A conversion's order id on its saga, so that a saga can be found by the id the shop knows (the
-- console's search, `GET /sagas?key=`). Archived rows keep the column too.
alter table sagas add column order_id text;
create index sagas_order on sagas (order_id) where order_id is not null;
alter table archived_sagas add column order_id text;

-- Sagas started before: the order id is in the `started` entry of their log.
update sagas s
   set order_id = convert_from(e.payload, 'UTF8')::jsonb #>> '{data,order_id}'
  from events e
 where e.stream_id = 'saga-' || s.saga_id and e.version = 1;
update archived_sagas s
   set order_id = convert_from(e.payload, 'UTF8')::jsonb #>> '{data,order_id}'
  from archived_events e
 where e.stream_id = 'saga-' || s.saga_id and e.version = 1;
