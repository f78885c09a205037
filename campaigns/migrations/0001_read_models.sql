-- The campaigns read models, built by projections.rs from the service's global event log.
create table partners (
    partner_id     uuid        primary key,
    name           text        not null,
    email          text        not null,
    payout_account text        not null,
    registered_at  timestamptz not null
);

-- Validity bounds stay in the wire's microseconds since the Unix epoch: every i64 a command may
-- carry fits, where a timestamptz would refuse the extremes and stall the projection.
create table campaigns (
    campaign_id             uuid        primary key,
    advertiser_id           uuid        not null,
    name                    text        not null,
    budget                  bigint      not null,
    currency                text        not null,
    commission_type         text        not null check (commission_type in ('fixed', 'percent')),
    commission_amount       bigint,
    commission_basis_points integer,
    valid_from              bigint      not null,
    valid_until             bigint      not null,
    -- The sum of held reservations; the domain keeps it at or below the budget.
    reserved                bigint      not null default 0,
    available               bigint      generated always as (budget - reserved) stored,
    -- The version of the campaign's stream this row reflects.
    version                 bigint      not null,
    created_at              timestamptz not null,
    updated_at              timestamptz not null
);
create index campaigns_advertiser on campaigns (advertiser_id, created_at);

create table campaign_partners (
    campaign_id   uuid        not null,
    partner_id    uuid        not null,
    associated_at timestamptz not null,
    primary key (campaign_id, partner_id)
);
create index campaign_partners_partner on campaign_partners (partner_id);

create table campaign_content (
    campaign_id   uuid        not null,
    content_id    uuid        not null,
    kind          text        not null,
    url           text        not null,
    title         text        not null,
    tags          text[]      not null,
    associated_at timestamptz not null,
    primary key (campaign_id, content_id)
);

-- A reservation id is unique within its campaign (the campaign's stream decides on it).
create table budget_reservations (
    campaign_id    uuid        not null,
    reservation_id uuid        not null,
    partner_id     uuid        not null,
    tracking_id    uuid        not null,
    amount         bigint      not null,
    currency       text        not null,
    status         text        not null check (status in ('held', 'released')),
    release_reason text,
    reserved_at    timestamptz not null,
    released_at    timestamptz,
    primary key (campaign_id, reservation_id)
);
create index budget_reservations_tracking on budget_reservations (tracking_id);
