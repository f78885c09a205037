-- Refunds (chargebacks) of converted orders: a refund tracking event names the conversion it
-- refunds, and each campaign counts its refunds.
alter table tracking_events add column refund_of uuid;
alter table campaign_tracking_stats add column refunds bigint not null default 0;
