-- Commissions' read models, built by projections.rs from the service's global event log.

-- One row per commission. A voided commission (reversed before it was ever assigned) has only
-- its id, reason and times: its reversal is all the service ever learned of it.
create table commissions (
    commission_id uuid        primary key,
    campaign_id   uuid,
    partner_id    uuid,
    tracking_id   uuid,
    amount        bigint,
    currency      text,
    status        text        not null,
    reason        text,
    assigned_at   timestamptz,
    reversed_at   timestamptz,
    updated_at    timestamptz not null,
    -- The global log position of the event that created the row: the order and paging cursor of
    -- listings (stable across rebuilds, unlike insertion order).
    position      bigint      not null
);
create index commissions_partner on commissions (partner_id, position);
create index commissions_campaign on commissions (campaign_id);

-- Sums are numeric, not bigint: commands come from outside, and a total overflowing would stop
-- the projection for good.
create table partner_balances (
    partner_id     uuid    not null,
    currency       text    not null,
    assigned       numeric not null default 0,
    reversed       numeric not null default 0,
    assigned_count bigint  not null default 0,
    reversed_count bigint  not null default 0,
    primary key (partner_id, currency)
);

create table campaign_commission_stats (
    campaign_id    uuid    not null,
    currency       text    not null,
    assigned       numeric not null default 0,
    reversed       numeric not null default 0,
    assigned_count bigint  not null default 0,
    reversed_count bigint  not null default 0,
    primary key (campaign_id, currency)
);
