//! How a saga decides: what an input causes in each state (`on_input`, one function per state),
//! the commands it sends forward and back with their derived ids, and when it parks. Pure: the
//! entries it returns are what the coordinator appends.

use super::*;

impl Saga {
    /// A command id, the same for every attempt: a resend is a duplicate the service ignores.
    fn command_id(&self, step: Step, compensation: bool) -> Uuid {
        let name = format!(
            "{}/{}",
            if compensation {
                "compensate"
            } else {
                "forward"
            },
            step.name()
        );
        Uuid::new_v5(&self.saga_id, name.as_bytes())
    }

    /// Whether the payment went out: nothing after it is undone, so a step past it is sent
    /// again until it answers, however long its service is away.
    pub(super) fn past_pivot(&self) -> bool {
        self.done.iter().any(|step| {
            self.definition
                .step(*step)
                .is_some_and(StepDefinition::is_pivot)
        })
    }

    /// A forward step's command id: the same for every attempt, and new after an operator
    /// resumed the saga (the service then decides the step again).
    fn forward_id(&self, step: Step) -> Uuid {
        match self.operator_rounds {
            0 => self.command_id(step, false),
            round => self.derived_id(&format!("forward/{}/{round}", step.name())),
        }
    }

    /// The id of what a saga creates in a service, derived so that a replay chooses it again.
    pub(crate) fn derived_id(&self, what: &str) -> Uuid {
        Uuid::new_v5(&self.saga_id, what.as_bytes())
    }

    fn forward(&self, step: Step, attempt: u32) -> Option<Sent> {
        let definition = self.definition.step(step)?;
        Some(Sent {
            step,
            attempt,
            command_id: self.forward_id(step),
            command: (definition.command)(self, self.data.as_ref()?)?,
            timeout: definition.forward_timeout(attempt),
        })
    }

    /// The id of a pivot's `attempt`-th question: one of its own each time (a resend of the same
    /// id would only get the first answer again).
    fn settle_id(&self, step: Step, attempt: u32) -> Uuid {
        self.derived_id(&format!("cancel/{}/{attempt}", step.name()))
    }

    /// Whether `sent` asks whether the pivot can still complete, rather than doing a step.
    pub fn settles_pivot(&self, sent: &Sent) -> bool {
        sent.command_id == self.settle_id(sent.step, sent.attempt)
    }

    /// The `attempt`-th question to the pivot `step` after its request went unanswered,
    /// waiting longer each time.
    fn settle(&self, step: Step, attempt: u32) -> Option<Sent> {
        let definition = self.definition.step(step)?;
        let reason = format!(
            "{} went unanswered after {} attempts",
            step.name(),
            definition.policy.attempts
        );
        Some(Sent {
            step,
            attempt,
            command_id: self.settle_id(step, attempt),
            command: (definition.pivot?.ask)(self, self.data.as_ref()?, reason),
            timeout: definition.forward_timeout(attempt),
        })
    }

    /// A step's own answer: go forward, or compensate what was done.
    fn step_answered(
        &self,
        step: Step,
        (command_id, message_id): (Uuid, Uuid),
        answer: &Answer,
        at: i64,
    ) -> Vec<Entry> {
        match answer {
            Answer::Succeeded { amount } => {
                let succeeded = Entry::StepSucceeded {
                    step,
                    command_id,
                    message_id,
                    amount: amount.clone(),
                    at,
                };
                self.followed_by(succeeded, |next| next.next_forward(at))
            }
            Answer::Rejected { code, reason } => {
                let failed = Entry::StepFailed {
                    step,
                    command_id,
                    message_id,
                    code: code.clone(),
                    reason: reason.clone(),
                    at,
                };
                self.start_compensating(format!("{} rejected: {reason}", step.name()), failed, at)
            }
        }
    }

    /// An answer while the saga asks whether its pivot can be cancelled: the pivot's own
    /// outcome, or the question's. Only a pivot that will never happen is compensated; one that
    /// happened goes forward; one in flight is waited for (the timer asks again).
    fn pivot_answered(
        &self,
        pending: &Sent,
        (command_id, message_id): (Uuid, Uuid),
        answer: &Answer,
        at: i64,
    ) -> Vec<Entry> {
        let step = pending.step;
        let step_id = self.forward_id(step);
        if command_id == step_id {
            return self.step_answered(step, (command_id, message_id), answer, at);
        }
        let Some(pivot) = self.definition.step(step).and_then(|s| s.pivot) else {
            return vec![];
        };
        if command_id != pending.command_id {
            return vec![];
        }
        let never = |code: &str, reason: &str| {
            let failed = Entry::StepFailed {
                step,
                command_id,
                message_id,
                code: code.to_owned(),
                reason: reason.to_owned(),
                at,
            };
            self.start_compensating(format!("{}: {reason}", step.name()), failed, at)
        };
        match answer {
            Answer::Succeeded { .. } => never(pivot.cancelled.0, pivot.cancelled.1),
            Answer::Rejected { code, reason } if pivot.never.contains(&code.as_str()) => {
                never(code, reason)
            }
            // Recorded as the step's own success, which is what a replay feeds back.
            Answer::Rejected { code, .. } if pivot.happened.contains(&code.as_str()) => self
                .step_answered(
                    step,
                    (step_id, message_id),
                    &Answer::Succeeded { amount: None },
                    at,
                ),
            Answer::Rejected { .. } => vec![],
        }
    }

    /// The command id of a compensation's `attempt` in this operator round. Each attempt is a
    /// command of its own, which the service decides again (a resend of one id would only get
    /// its first answer back); undoing twice changes nothing.
    fn compensation_id(&self, step: Step, attempt: u32) -> Uuid {
        match (self.operator_rounds, attempt) {
            (0, 1) => self.command_id(step, true),
            (round, _) => self.derived_id(&format!("compensate/{}/{round}/{attempt}", step.name())),
        }
    }

    fn compensation(&self, step: Step, attempt: u32) -> Option<Sent> {
        let definition = self.definition.step(step)?;
        let reason = self.reason.clone().unwrap_or_default();
        Some(Sent {
            step,
            attempt,
            command_id: self.compensation_id(step, attempt),
            command: (definition.undo?)(self, self.data.as_ref()?, reason)?,
            timeout: definition.compensation_timeout(attempt),
        })
    }

    /// The compensations for the steps done so far that can be undone, in reverse order, ending
    /// with the trigger's.
    pub(super) fn compensations(&self) -> Vec<Step> {
        self.done
            .iter()
            .rev()
            .copied()
            .filter(|step| {
                self.definition
                    .step(*step)
                    .is_some_and(|s| s.undo.is_some())
            })
            .chain([Step::Trigger])
            .collect()
    }

    /// Entries for starting compensation now, as if `entry` (the failure) had been applied.
    fn start_compensating(&self, reason: String, failure: Entry, at: i64) -> Vec<Entry> {
        self.followed_by(failure, |next| {
            let started = Entry::CompensationStarted { reason, at };
            next.followed_by(started, |next| next.next_compensation(at))
        })
    }

    /// `entry`, then the entries `then` decides for the saga as it is once `entry` is applied.
    fn followed_by(&self, entry: Entry, then: impl FnOnce(&Saga) -> Vec<Entry>) -> Vec<Entry> {
        let mut next = self.clone();
        next.apply(&entry);
        let mut entries = vec![entry];
        entries.extend(then(&next));
        entries
    }

    /// Sends the next compensation, or ends the saga as compensated. A step with nothing to
    /// undo (its answer said it changed nothing) counts as undone, with no command.
    fn next_compensation(&self, at: i64) -> Vec<Entry> {
        let Some(step) = self.to_compensate.first().copied() else {
            return vec![Entry::Compensated { at }];
        };
        if let Some(sent) = self.compensation(step, 1) {
            return vec![Entry::CompensationCommandSent { sent, at }];
        }
        let nothing = Entry::CompensationSucceeded {
            step,
            command_id: Uuid::nil(),
            message_id: Uuid::nil(),
            at,
        };
        self.followed_by(nothing, |next| next.next_compensation(at))
    }

    /// The next forward step after `done`, or completion. A step that cannot be built (no
    /// amount came back with the reservation) ends the saga by compensation.
    fn next_forward(&self, at: i64) -> Vec<Entry> {
        let Some(step) = self.definition.steps.get(self.done.len()).map(|s| s.step) else {
            return vec![Entry::Completed { at }];
        };
        match self.forward(step, 1) {
            Some(sent) => vec![Entry::StepCommandSent { sent, at }],
            None => {
                let reason = format!(
                    "{} cannot be sent: the reservation reported no amount",
                    step.name()
                );
                let started = Entry::CompensationStarted { reason, at };
                self.followed_by(started, |next| next.next_compensation(at))
            }
        }
    }

    /// Decides what an input causes: the log entries to append. Inputs that do not fit the
    /// saga's state (a duplicate or late reply, a stale timer) cause nothing.
    pub fn on_input(&self, input: &Input) -> Vec<Entry> {
        match self.status {
            Status::NotStarted => self.on_not_started(input),
            Status::Running => self.on_running(input),
            Status::Compensating => self.on_compensating(input),
            Status::Parked => self.on_parked(input),
            Status::Completed | Status::Compensated => vec![],
        }
    }

    /// Not started: only its start starts it, sending the first step's command.
    fn on_not_started(&self, input: &Input) -> Vec<Entry> {
        let Input::Start {
            saga_id,
            definition,
            data,
            at,
        } = input
        else {
            return vec![];
        };
        let started = Entry::Started {
            saga_id: *saga_id,
            saga_type: definition.saga_type,
            definition_version: definition.version,
            data: data.clone(),
            at: *at,
        };
        let mut next = Saga::new(*saga_id, definition);
        next.apply(&started);
        let mut entries = vec![started];
        entries.extend(next.next_forward(*at));
        entries
    }

    /// Running: the pending step's answer or timeout moves it on; an operator may force it to
    /// compensate.
    fn on_running(&self, input: &Input) -> Vec<Entry> {
        match input {
            Input::Reply {
                command_id,
                message_id,
                answer,
                at,
            } => {
                let Some(pending) = self.pending.as_ref() else {
                    return vec![];
                };
                let ids = (*command_id, *message_id);
                if self.settles_pivot(pending) {
                    self.pivot_answered(pending, ids, answer, *at)
                } else if pending.command_id == *command_id {
                    self.step_answered(pending.step, ids, answer, *at)
                } else {
                    vec![]
                }
            }
            Input::Timeout {
                command_id,
                attempt,
                at,
            } => self.running_timed_out(*command_id, *attempt, *at),
            Input::Operator {
                action: OperatorAction::Compensate,
                actor,
                reason,
                at,
            } => {
                let acted = Entry::OperatorActed {
                    action: OperatorAction::Compensate,
                    actor: actor.clone(),
                    reason: reason.clone(),
                    at: *at,
                };
                self.start_compensating(format!("compensation forced by {actor}"), acted, *at)
            }
            _ => vec![],
        }
    }

    /// Running, the pending command unanswered in time: sent again, its payment asked about, or
    /// the saga compensated.
    fn running_timed_out(&self, command_id: Uuid, attempt: u32, at: i64) -> Vec<Entry> {
        let Some(pending) = self
            .pending
            .as_ref()
            .filter(|p| p.command_id == command_id && p.attempt == attempt)
        else {
            return vec![];
        };
        let timed_out = Entry::StepTimedOut {
            step: pending.step,
            command_id,
            attempt,
            at,
        };
        let Some(definition) = self.definition.step(pending.step) else {
            return vec![];
        };
        let next = if self.settles_pivot(pending) {
            self.settle(pending.step, attempt + 1)
        } else if attempt < definition.policy.attempts || self.past_pivot() {
            self.forward(pending.step, attempt + 1)
        } else if definition.is_pivot() {
            // It may still have happened: ask, never assume.
            self.settle(pending.step, 1)
        } else {
            let reason = format!("{} timed out after {attempt} attempts", pending.step.name());
            return self.start_compensating(reason, timed_out, at);
        };
        let mut entries = vec![timed_out];
        entries.extend(next.map(|sent| Entry::StepCommandSent { sent, at }));
        entries
    }

    /// Compensating: the pending compensation's answer, timeout or backoff timer moves it on.
    fn on_compensating(&self, input: &Input) -> Vec<Entry> {
        match input {
            Input::Reply {
                command_id,
                message_id,
                answer,
                at,
            } => self.compensation_answered(*command_id, *message_id, answer, *at),
            Input::Timeout {
                command_id,
                attempt,
                at,
            } => self.compensation_timed_out(*command_id, *attempt, *at),
            _ => vec![],
        }
    }

    /// Compensating, an answer to the pending compensation (or a late success of an earlier
    /// attempt of it): the next compensation, or the refusal counted.
    fn compensation_answered(
        &self,
        command_id: Uuid,
        message_id: Uuid,
        answer: &Answer,
        at: i64,
    ) -> Vec<Entry> {
        let Some(pending) = self.pending.as_ref().filter(|p| {
            if p.command_id == command_id {
                return !self.awaiting_retry;
            }
            // An earlier attempt answers late (its timeout sent the next): undone is
            // undone, whichever attempt did it.
            matches!(answer, Answer::Succeeded { .. })
                && (1..p.attempt).any(|attempt| self.compensation_id(p.step, attempt) == command_id)
        }) else {
            return vec![];
        };
        match answer {
            Answer::Succeeded { .. } => {
                let succeeded = Entry::CompensationSucceeded {
                    step: pending.step,
                    command_id,
                    message_id,
                    at,
                };
                self.followed_by(succeeded, |next| next.next_compensation(at))
            }
            Answer::Rejected { code, reason } => {
                self.compensation_failed(pending, Some(message_id), format!("{code}: {reason}"), at)
            }
        }
    }

    /// Compensating, a timer: a refused compensation's backoff is over (the next attempt goes),
    /// or the pending one went unanswered (counted as failed).
    fn compensation_timed_out(&self, command_id: Uuid, attempt: u32, at: i64) -> Vec<Entry> {
        let Some(pending) = self.pending.as_ref().filter(|p| p.command_id == command_id) else {
            return vec![];
        };
        if self.awaiting_retry {
            // The backoff timer of the refused attempt: send the next one.
            if attempt != pending.attempt + 1 {
                return vec![];
            }
            let due = Entry::CompensationRetryDue {
                step: pending.step,
                command_id,
                attempt,
                at,
            };
            let mut entries = vec![due];
            entries.extend(
                self.compensation(pending.step, attempt)
                    .map(|sent| Entry::CompensationCommandSent { sent, at }),
            );
            return entries;
        }
        if pending.attempt != attempt {
            return vec![];
        }
        self.compensation_failed(
            pending,
            None,
            format!("no answer within {:?}", pending.timeout),
            at,
        )
    }

    /// Parked: only an operator moves it, retrying the failing compensation, resuming the steps,
    /// or compensating past it.
    fn on_parked(&self, input: &Input) -> Vec<Entry> {
        let Input::Operator {
            action,
            actor,
            reason,
            at,
        } = input
        else {
            return vec![];
        };
        let resumable = self.failed.is_some() && self.to_compensate == self.compensations();
        if *action == OperatorAction::Resume && !resumable {
            return vec![];
        }
        let acted = Entry::OperatorActed {
            action: *action,
            actor: actor.clone(),
            reason: reason.clone(),
            at: *at,
        };
        let mut next = self.clone();
        next.apply(&acted);
        let mut entries = vec![acted];
        match action {
            OperatorAction::Retry => entries.extend(next.next_compensation(*at)),
            OperatorAction::Resume => entries.extend(
                self.failed
                    .and_then(|step| next.forward(step, 1))
                    .map(|sent| Entry::StepCommandSent { sent, at: *at }),
            ),
            OperatorAction::Compensate => {
                // The failing compensation counts as done (skipped).
                let skipped = Entry::CompensationSucceeded {
                    step: next.to_compensate.first().copied().unwrap_or(Step::Trigger),
                    command_id: Uuid::nil(),
                    message_id: Uuid::nil(),
                    at: *at,
                };
                next.apply(&skipped);
                entries.push(skipped);
                entries.extend(next.next_compensation(*at));
            }
        }
        entries
    }

    /// How long a refused compensation waits before its `attempt`: half the step's timeout,
    /// doubling, plus up to half as much again. The jitter comes from the saga's id, so that
    /// sagas refused together spread out, and a replay chooses the same.
    pub(super) fn retry_backoff(&self, step: Step, attempt: u32) -> Duration {
        let timeout = self
            .definition
            .step(step)
            .map_or(Duration::ZERO, |s| s.policy.timeout);
        let base = (timeout / 2).saturating_mul(2u32.saturating_pow(attempt.saturating_sub(2)));
        let spread = u128::from(u64::try_from(base.as_millis() / 2).unwrap_or(u64::MAX)).max(1);
        let draw = self
            .derived_id(&format!("jitter/{}/{attempt}", step.name()))
            .as_u128()
            % spread;
        base + Duration::from_millis(u64::try_from(draw).unwrap_or(0))
    }

    fn compensation_failed(
        &self,
        pending: &Sent,
        message_id: Option<Uuid>,
        reason: String,
        at: i64,
    ) -> Vec<Entry> {
        let last = pending.attempt >= COMPENSATION_ATTEMPTS;
        let refused = message_id.is_some();
        let failed = Entry::CompensationFailed {
            step: pending.step,
            command_id: pending.command_id,
            attempt: pending.attempt,
            message_id,
            reason: reason.clone(),
            retry_in: (refused && !last)
                .then(|| self.retry_backoff(pending.step, pending.attempt + 1)),
            at,
        };
        let mut entries = vec![failed];
        if !last {
            if !refused {
                entries.extend(
                    self.compensation(pending.step, pending.attempt + 1)
                        .map(|sent| Entry::CompensationCommandSent { sent, at }),
                );
            }
        } else {
            entries.push(Entry::Parked {
                reason: format!(
                    "compensation {} kept failing: {reason}",
                    pending.step.name()
                ),
                at,
            });
        }
        entries
    }
}
