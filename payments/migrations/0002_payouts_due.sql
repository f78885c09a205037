-- Payouts the worker still has to call the provider for (payouts.rs). A row is inserted with
-- PayoutAttempted and deleted with the payment's outcome, each in the same transaction. Not a read
-- model: it is the worker's durable to-do list and survives any restart.
create table payouts_due (
    payment_id      uuid        primary key,
    -- the requesting command's message properties: the cause of the events the worker records
    properties      jsonb       not null,
    -- claims so far; the delay before the next call grows with it
    attempts        integer     not null default 0,
    -- when the row may be claimed; a claim pushes it a lease ahead
    next_attempt_at timestamptz not null default now(),
    -- the provider may have seen the key without its answer being recorded: ask before paying
    ask_first       boolean     not null default false,
    last_error      text,
    created_at      timestamptz not null default now()
);
create index payouts_due_next on payouts_due (next_attempt_at);
