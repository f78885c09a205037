-- Every budget reservation, written in the transaction that appends its event: how a decision
-- finds the reservation a command names without folding the campaign's whole stream (its
-- snapshot leaves reservations out). Not a read model: decisions read it, so it is never behind.
create table reservation_index (
    campaign_id    uuid    not null,
    reservation_id uuid    not null,
    partner_id     uuid    not null,
    tracking_id    uuid    not null,
    amount         bigint  not null,
    currency       text    not null,
    released       boolean not null,
    primary key (campaign_id, reservation_id)
);
