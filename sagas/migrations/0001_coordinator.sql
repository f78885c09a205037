-- The coordinator's tables beside its event store (each saga's log is a stream `saga-{id}`).

-- One row per saga, kept in the transaction that appends to its log: what the list and stall
-- queries read.
create table sagas (
    saga_id        uuid        primary key,
    saga_type      text        not null,
    status         text        not null,
    tracking_id    uuid        not null,
    campaign_id    uuid        not null,
    partner_id     uuid        not null,
    correlation_id uuid,
    tenant         text,
    actor          text,
    current_step   text,
    reason         text,
    started_at     timestamptz not null,
    updated_at     timestamptz not null
);
create index sagas_status on sagas (status, updated_at);
create index sagas_campaign on sagas (campaign_id);
create index sagas_partner on sagas (partner_id);

-- Durable step timeouts: pulsar-lite ignores delayed delivery, and timers must survive restarts.
create table saga_timers (
    saga_id    uuid        not null,
    command_id uuid        not null,
    attempt    integer     not null,
    due_at     timestamptz not null,
    primary key (saga_id, command_id, attempt)
);
create index saga_timers_due on saga_timers (due_at);
