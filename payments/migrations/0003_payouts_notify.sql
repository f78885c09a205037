-- Wakes the payout worker when a payout is scheduled: a notification on `pulsaga_payouts` at the
-- commit of the transaction that scheduled it. Retries, due later, are still found by polling.
create function payouts_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('pulsaga_payouts', '');
    return null;
end
$$;

create trigger payouts_notify after insert on payouts_due
    for each statement execute function payouts_notify();
