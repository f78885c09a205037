-- Tracking's read models, built by projections.rs from the service's global event log.
create table tracking_events (
    tracking_id    uuid        primary key,
    campaign_id    uuid        not null,
    partner_id     uuid        not null,
    kind           text        not null,
    order_id       text,
    order_amount   bigint,
    currency       text,
    occurred_at    timestamptz not null,
    status         text        not null,
    failure_reason text,
    recorded_at    timestamptz not null,
    updated_at     timestamptz not null
);
create index tracking_events_campaign on tracking_events (campaign_id);
create index tracking_events_partner on tracking_events (partner_id);

create table campaign_tracking_stats (
    campaign_id uuid   primary key,
    clicks      bigint not null default 0,
    leads       bigint not null default 0,
    conversions bigint not null default 0,
    confirmed   bigint not null default 0,
    failed      bigint not null default 0
);
