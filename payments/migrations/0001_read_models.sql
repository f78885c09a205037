-- Payments' read models, built by projections.rs from the service's global event log.
create table payments (
    payment_id         uuid        primary key,
    commission_id      uuid        not null,
    partner_id         uuid        not null,
    campaign_id        uuid        not null,
    amount             bigint      not null,
    currency           text        not null,
    -- requested | attempted | unknown | completed | failed
    status             text        not null,
    provider_reference text,
    -- why it failed, or why its outcome is unknown
    reason             text,
    requested_at       timestamptz not null,
    updated_at         timestamptz not null
);
create index payments_partner on payments (partner_id, requested_at);

-- What each partner was paid, per currency: completed payments only.
create table partner_payouts (
    partner_id  uuid   not null,
    currency    text   not null,
    paid_amount bigint not null,
    paid_count  bigint not null,
    primary key (partner_id, currency)
);
