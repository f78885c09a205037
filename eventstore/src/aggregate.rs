//! An event-sourced aggregate, pure: `decide` takes a command against the state and answers the
//! events it causes (none: its effect is in place already) or why not; `apply` folds one event
//! into the state. Every service's domain implements it for its aggregates, whose streams the
//! handlers load and append to; the domains' tests read as given (events), when (a command),
//! then (events, or a rejection).

pub trait Aggregate: Default {
    type Command;
    type Event;
    type Error;

    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    fn apply(&mut self, event: &Self::Event);

    /// The state `events` fold into, from the start.
    fn folded<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }

    /// Given `events`, when `command`: what it decides.
    fn given_when(
        events: &[Self::Event],
        command: &Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        Self::folded(events).decide(command)
    }
}
