-- The version of its definition a saga started with and keeps until it ends (its log's first
-- entry records it too): what an operator checks before a version leaves the catalogue. Sagas
-- started before definitions had versions ran the first.
alter table sagas add column definition_version integer not null default 1;
alter table archived_sagas add column definition_version integer not null default 1;
create index sagas_definition on sagas (saga_type, definition_version)
    where status not in ('completed', 'compensated');
