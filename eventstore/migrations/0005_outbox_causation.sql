-- The messages a command caused, found by its id: a redelivered command that was already handled
-- gets the same answer again (see outbox::requeue_caused_by).
create index outbox_caused_by on outbox ((properties ->> 'causation_id'));
