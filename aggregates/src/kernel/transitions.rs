//! State machines as data.
//!
//! Every lifecycle in the domain (incident, promotion, deployment, mapping, …) is an
//! enum of states plus one `VALID_TRANSITIONS` table. [`check`] is the single function
//! that decides whether a move is allowed, so the rules live in one table per machine
//! and one piece of code, and the tests can walk every (from, to) pair mechanically.

use std::fmt::{Debug, Display};

use crate::kernel::error::DomainError;

/// A lifecycle whose transitions are listed in a table.
pub trait StateMachine: Copy + Eq + Debug + Display + Send + Sync + 'static {
    /// Human name of the machine, used in error messages ("incident", "promotion", …).
    const MACHINE: &'static str;
    /// Every state of the machine, in declaration order.
    const ALL: &'static [Self];
    /// States an aggregate may be created in (the "(new) →" row).
    const INITIAL: &'static [Self];
    /// The `VALID_TRANSITIONS` table: from-state → allowed to-states.
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])];
}

/// A status change `(from, to)`; `from` is `None` when the aggregate is created.
pub type StatusChange<S> = (Option<S>, S);

/// How an allowed transition was allowed: by the table, or by an admin override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    ByTable,
    ByAdminOverride,
}

impl Allowed {
    /// True when the move was outside the table and forced by an admin.
    pub fn is_override(self) -> bool {
        self == Allowed::ByAdminOverride
    }
}

/// The states `from` may move to according to the table.
pub fn allowed_targets<S: StateMachine>(from: S) -> &'static [S] {
    S::VALID_TRANSITIONS
        .iter()
        .find(|(state, _)| *state == from)
        .map(|(_, targets)| *targets)
        .unwrap_or(&[])
}

/// A state with no way out. Terminal states stay terminal even for admins:
/// reopening would rewrite what the audit trail already says happened.
pub fn is_terminal<S: StateMachine>(state: S) -> bool {
    allowed_targets(state).is_empty()
}

/// The one shared check. `admin_override` must only be `true` when the caller has
/// already established that the actor is an admin.
///
/// An override allows any move between two different states except out of a
/// terminal state; everything else must be in the table.
pub fn check<S: StateMachine>(
    from: S,
    to: S,
    admin_override: bool,
) -> Result<Allowed, DomainError> {
    if allowed_targets(from).contains(&to) {
        return Ok(Allowed::ByTable);
    }
    if admin_override && from != to && !is_terminal(from) {
        return Ok(Allowed::ByAdminOverride);
    }
    Err(refusal(from, to))
}

/// Checks that `to` is a state the machine may be created in.
pub fn check_initial<S: StateMachine>(to: S) -> Result<(), DomainError> {
    if S::INITIAL.contains(&to) {
        Ok(())
    } else {
        Err(DomainError::InvalidTransition {
            machine: S::MACHINE,
            from: "new".to_string(),
            to: to.to_string(),
            allowed: S::INITIAL.iter().map(ToString::to_string).collect(),
        })
    }
}

/// The typed refusal for `from → to`, carrying the allowed targets.
pub fn refusal<S: StateMachine>(from: S, to: S) -> DomainError {
    DomainError::InvalidTransition {
        machine: S::MACHINE,
        from: from.to_string(),
        to: to.to_string(),
        allowed: allowed_targets(from)
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

/// An aggregate whose lifecycle states the store checks on every commit.
///
/// The aggregates check their tables when they decide; this is the second, outer
/// check that holds whatever produced the events: the store's commit applies each
/// event to the state before it and asks [`Lifecycle::check_step`] whether the move
/// each machine made is in that machine's table (or allowed by an admin override).
/// An aggregate with no machine answers `Ok(())`.
pub trait Lifecycle {
    /// Checks the move one event made, from `before` to `after`.
    fn check_step(before: &Self, after: &Self, admin_override: bool) -> Result<(), DomainError>;
}

/// One machine's step: `None` is "not created". Creation must land in an initial
/// state, a change must be in the table (or allowed by the override), and nothing
/// may go back to "not created".
pub fn step<S: StateMachine>(
    before: Option<S>,
    after: Option<S>,
    admin_override: bool,
) -> Result<(), DomainError> {
    match (before, after) {
        (None, None) => Ok(()),
        (None, Some(to)) => check_initial(to),
        (Some(from), Some(to)) if from == to => Ok(()),
        (Some(from), Some(to)) => check(from, to, admin_override).map(|_| ()),
        (Some(from), None) => Err(DomainError::InvalidTransition {
            machine: S::MACHINE,
            from: from.to_string(),
            to: "new".to_string(),
            allowed: allowed_targets(from)
                .iter()
                .map(ToString::to_string)
                .collect(),
        }),
    }
}

/// Implements `Display`/`FromStr` (snake_case names) for a state enum.
#[macro_export]
macro_rules! state_names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The state's stable name, as stored in events and shown to clients.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl ::std::str::FromStr for $ty {
            type Err = $crate::kernel::error::DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    other => Err($crate::kernel::error::DomainError::validation(
                        "status",
                        format!("unknown state `{other}`"),
                    )),
                }
            }
        }
    };
}

#[cfg(test)]
pub(crate) mod table_tests {
    use std::collections::HashSet;
    use std::hash::Hash;

    use super::*;

    /// Every command from every history through the aggregate (given / when / then):
    /// accepted changes must be in the table, refusals must name pairs that are not,
    /// and every pair of the table must be reached by some command.
    pub(crate) fn assert_commands_cover_table<A, S>(
        histories: Vec<(&str, Vec<A::Event>)>,
        commands: Vec<(&str, A::Command)>,
        services: impl Fn() -> A::Services,
        change: fn(&A::Event) -> Option<StatusChange<S>>,
    ) where
        A: cqrs_es::Aggregate<Error = DomainError>,
        A::Command: Clone,
        S: StateMachine + Hash,
    {
        let mut coverage = Coverage::<S>::new();
        for (state, history) in &histories {
            for (name, command) in &commands {
                let result = cqrs_es::test::TestFramework::<A>::with(services())
                    .given(history.clone())
                    .when(command.clone())
                    .inspect_result();
                let changes = result.map(|events| events.iter().filter_map(change).collect());
                coverage.record(&format!("{state} / {name}"), changes);
            }
        }
        coverage.assert_complete();
    }

    /// Records which status changes commands produced, asserting each is in the table
    /// and each refusal names a pair that is not; then checks the table is covered.
    pub(crate) struct Coverage<S: StateMachine + Hash> {
        seen: HashSet<(Option<S>, S)>,
    }

    impl<S: StateMachine + Hash> Coverage<S> {
        pub(crate) fn new() -> Self {
            Coverage {
                seen: HashSet::new(),
            }
        }

        pub(crate) fn record(
            &mut self,
            label: &str,
            result: Result<Vec<(Option<S>, S)>, DomainError>,
        ) {
            match result {
                Ok(changes) => {
                    for (from, to) in changes {
                        match from {
                            Some(from) => assert!(
                                allowed_targets(from).contains(&to),
                                "{label}: moved {from} → {to}"
                            ),
                            None => assert!(S::INITIAL.contains(&to), "{label}: created in {to}"),
                        }
                        self.seen.insert((from, to));
                    }
                }
                // refusals of another machine (e.g. a deployment's per-workflow status)
                Err(DomainError::InvalidTransition { machine, .. }) if machine != S::MACHINE => {}
                Err(DomainError::InvalidTransition {
                    from, to, allowed, ..
                }) => {
                    let find = |name: &str| S::ALL.iter().copied().find(|s| s.to_string() == name);
                    if let (Some(f), Some(t)) = (find(&from), find(&to)) {
                        assert!(
                            !allowed_targets(f).contains(&t),
                            "{label}: refused {f} → {t}, which the table allows"
                        );
                        let expected: Vec<String> =
                            allowed_targets(f).iter().map(ToString::to_string).collect();
                        assert_eq!(allowed, expected, "{label}: allowed targets");
                    } else {
                        assert_eq!(from, "new", "{label}: unknown state in refusal");
                    }
                }
                Err(_) => {}
            }
        }

        pub(crate) fn assert_complete(&self) {
            let mut missing = vec![];
            for to in S::INITIAL {
                if !self.seen.contains(&(None, *to)) {
                    missing.push(format!("new → {to}"));
                }
            }
            for (from, targets) in S::VALID_TRANSITIONS {
                for to in *targets {
                    if !self.seen.contains(&(Some(*from), *to)) {
                        missing.push(format!("{from} → {to}"));
                    }
                }
            }
            assert!(
                missing.is_empty(),
                "{} pairs no command reached: {missing:?}",
                S::MACHINE
            );
        }
    }

    /// Structural checks every table must pass: each state listed once as a
    /// from-state, no self-loops, and targets that are states of the machine.
    pub(crate) fn assert_well_formed<S: StateMachine>() {
        for state in S::ALL {
            let rows = S::VALID_TRANSITIONS
                .iter()
                .filter(|(s, _)| s == state)
                .count();
            assert_eq!(
                rows,
                1,
                "{} state {state} must appear exactly once",
                S::MACHINE
            );
            assert!(
                !allowed_targets(*state).contains(state),
                "{state} → {state} self-loop"
            );
        }
        for state in S::INITIAL {
            assert!(S::ALL.contains(state));
        }
    }

    /// Every (from, to) pair through the shared check, with and without override.
    pub(crate) fn assert_check_matches_table<S: StateMachine>() {
        for &from in S::ALL {
            for &to in S::ALL {
                let in_table = allowed_targets(from).contains(&to);
                match check(from, to, false) {
                    Ok(a) => {
                        assert!(in_table, "{from} → {to} allowed but not in table");
                        assert_eq!(a, Allowed::ByTable);
                    }
                    Err(DomainError::InvalidTransition {
                        from: f,
                        to: t,
                        allowed,
                        ..
                    }) => {
                        assert!(!in_table, "{from} → {to} refused but in table");
                        assert_eq!((f, t), (from.to_string(), to.to_string()));
                        let expected: Vec<String> = allowed_targets(from)
                            .iter()
                            .map(ToString::to_string)
                            .collect();
                        assert_eq!(allowed, expected);
                    }
                    Err(other) => panic!("unexpected error {other:?}"),
                }
                let overridden = check(from, to, true);
                let expect_ok = in_table || (from != to && !is_terminal(from));
                assert_eq!(overridden.is_ok(), expect_ok, "override {from} → {to}");
            }
        }
    }
}
