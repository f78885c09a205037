-- Claw-backs: a completed payout taken back from the partner's balance when its order was
-- refunded (status clawed_back), and each partner's totals clawed back.
alter table payments add column clawback_id uuid;
alter table partner_payouts add column clawed_back_amount bigint not null default 0,
                            add column clawed_back_count bigint not null default 0;
