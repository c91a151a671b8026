//! given / when / then for the workflow mapping.

use cqrs_es::test::TestFramework;

use super::*;
use crate::kernel::command::{Actor, Role};
use crate::kernel::ids::LocalId;
use crate::kernel::transitions::table_tests::{self, Coverage};
use crate::reservation::{InMemoryReservations, ReservationKey};

const ENV: &str = "prod";

fn slot(environment: &str, canonical: &str) -> ReservationKey {
    ReservationKey::LinkSlot {
        environment: LocalId::parse(environment).unwrap(),
        canonical: LocalId::parse(canonical).unwrap(),
    }
}
const WF: &str = "wf1";

fn hash(n: u8) -> ContentHash {
    ContentHash::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

fn obs(n: u8) -> Observation {
    Observation {
        name: "Orders".into(),
        content_hash: hash(n),
        n8n_updated_at: None,
    }
}

fn id(s: &str) -> LocalId {
    LocalId::parse(s).unwrap()
}

fn issue(command: MappingCommand) -> Issued<MappingCommand> {
    Issued::new(Actor::new("dev", Role::Developer), Utc::now(), command)
}

fn observe(n: u8, auto_link: Option<&str>) -> MappingCommand {
    MappingCommand::Observe {
        environment_id: id(ENV),
        n8n_workflow_id: id(WF),
        observation: obs(n),
        auto_link: auto_link.map(id),
    }
}

fn discovered(linked: bool) -> MappingEvent {
    MappingEvent::Discovered {
        environment_id: ENV.into(),
        n8n_workflow_id: WF.into(),
        observation: obs(1),
        canonical_id: linked.then(|| "c1".to_string()),
        status: if linked {
            MappingStatus::Linked
        } else {
            MappingStatus::Untracked
        },
        auto_linked: linked,
    }
}

/// Named starting points, each with its history and whether it holds the c1 slot.
fn histories() -> Vec<(&'static str, Vec<MappingEvent>, bool)> {
    use MappingStatus::*;
    let gone = |from| MappingEvent::Disappeared { from, to: Missing };
    vec![
        ("new", vec![], false),
        ("linked", vec![discovered(true)], true),
        ("untracked", vec![discovered(false)], false),
        (
            "missing-linked",
            vec![discovered(true), gone(Linked)],
            false,
        ),
        (
            "missing-untracked",
            vec![discovered(false), gone(Untracked)],
            false,
        ),
        (
            "ignored-linked",
            vec![
                discovered(true),
                MappingEvent::Ignored {
                    from: Linked,
                    reason: None,
                },
            ],
            false,
        ),
        (
            "ignored-untracked",
            vec![
                discovered(false),
                MappingEvent::Ignored {
                    from: Untracked,
                    reason: None,
                },
            ],
            false,
        ),
        (
            "ignored-gone",
            vec![
                discovered(false),
                MappingEvent::Ignored {
                    from: Untracked,
                    reason: None,
                },
                MappingEvent::Disappeared {
                    from: Ignored,
                    to: Ignored,
                },
            ],
            false,
        ),
        (
            "deleted",
            vec![
                discovered(true),
                MappingEvent::Deleted {
                    from: Linked,
                    reason: None,
                },
            ],
            false,
        ),
    ]
}

fn commands() -> Vec<MappingCommand> {
    vec![
        observe(1, None),
        observe(2, None),
        observe(1, Some("c1")),
        MappingCommand::ObserveMissing,
        MappingCommand::ObserveGitHash {
            git_content_hash: hash(9),
        },
        MappingCommand::Link {
            canonical_id: id("c1"),
        },
        MappingCommand::Link {
            canonical_id: id("c2"),
        },
        MappingCommand::Unlink { reason: None },
        MappingCommand::Ignore {
            reason: Some("noise".into()),
        },
        MappingCommand::Unignore,
        MappingCommand::Delete { reason: None },
    ]
}

#[test]
fn table_is_well_formed() {
    table_tests::assert_well_formed::<MappingStatus>();
    table_tests::assert_check_matches_table::<MappingStatus>();
}

/// Every command from every reachable state, with the link slot free and taken:
/// whatever is accepted changes status only along the table, every refusal is typed,
/// and every pair of the table (plus both creations) is reachable.
#[test]
fn every_command_from_every_state_stays_in_the_table() {
    let mut coverage = Coverage::<MappingStatus>::new();
    for (label, history, holds_slot) in histories() {
        for slot_taken_by_other in [false, true] {
            for command in commands() {
                let reservations = Arc::new(InMemoryReservations::default());
                let key = slot(ENV, "c1");
                let holder = if slot_taken_by_other {
                    "other"
                } else if holds_slot {
                    WF
                } else {
                    ""
                };
                if !holder.is_empty() {
                    futures_lite(reservations.claim(&key, holder)).unwrap();
                }
                let services: Arc<dyn Reservations> = reservations;
                let result = TestFramework::<WorkflowMapping>::with(services)
                    .given(history.clone())
                    .when(issue(command.clone()))
                    .inspect_result();
                if let Ok(events) = &result {
                    // each change starts from the status the mapping is actually in
                    let mut state = WorkflowMapping::default();
                    history.iter().cloned().for_each(|e| state.apply(e));
                    for event in events {
                        if let Some((Some(from), _)) = event.status_change() {
                            assert_eq!(from, state.status, "{label}: {command:?}");
                        }
                        state.apply(event.clone());
                    }
                }
                let changes = result.map(|events| {
                    events
                        .iter()
                        .filter_map(MappingEvent::status_change)
                        .collect()
                });
                coverage.record(&format!("{label} / {command:?}"), changes);
            }
        }
    }
    coverage.assert_complete();
}

/// Drives a boxed future to completion on a throwaway runtime (test setup only).
fn futures_lite<T>(f: crate::reservation::BoxFuture<'_, T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn run(
    history: Vec<MappingEvent>,
    command: MappingCommand,
    reservations: Arc<dyn Reservations>,
) -> Result<Vec<MappingEvent>, DomainError> {
    TestFramework::<WorkflowMapping>::with(reservations)
        .given(history)
        .when(issue(command))
        .inspect_result()
}

#[test]
fn an_unchanged_observation_appends_nothing() {
    let r: Arc<dyn Reservations> = Arc::new(InMemoryReservations::default());
    assert_eq!(
        run(vec![discovered(false)], observe(1, None), r.clone()),
        Ok(vec![])
    );
    assert_eq!(
        run(
            vec![discovered(false)],
            MappingCommand::ObserveMissing,
            r.clone()
        )
        .unwrap()
        .len(),
        1
    );
    let gone = vec![
        discovered(false),
        MappingEvent::Disappeared {
            from: MappingStatus::Untracked,
            to: MappingStatus::Missing,
        },
    ];
    assert_eq!(run(gone, MappingCommand::ObserveMissing, r), Ok(vec![]));
}

#[test]
fn ignored_records_observations_but_keeps_status_and_unignore_recomputes() {
    let r: Arc<dyn Reservations> = Arc::new(InMemoryReservations::default());
    let mut history = vec![
        discovered(false),
        MappingEvent::Ignored {
            from: MappingStatus::Untracked,
            reason: None,
        },
    ];
    let changed = run(history.clone(), observe(3, None), r.clone()).unwrap();
    assert!(matches!(
        &changed[..],
        [MappingEvent::ContentObserved { .. }]
    ));
    let gone = run(history.clone(), MappingCommand::ObserveMissing, r.clone()).unwrap();
    assert_eq!(
        gone,
        vec![MappingEvent::Disappeared {
            from: MappingStatus::Ignored,
            to: MappingStatus::Ignored
        }]
    );
    history.extend(gone);
    let unignored = run(history, MappingCommand::Unignore, r).unwrap();
    assert_eq!(
        unignored,
        vec![MappingEvent::Unignored {
            to: MappingStatus::Missing,
            canonical_id: None
        }]
    );
}

#[test]
fn one_linked_mapping_per_canonical_and_environment() {
    let shared = Arc::new(InMemoryReservations::default());
    let r: Arc<dyn Reservations> = shared.clone();
    let first = run(
        vec![discovered(false)],
        MappingCommand::Link {
            canonical_id: id("c7"),
        },
        r.clone(),
    )
    .unwrap();
    assert!(matches!(
        &first[..],
        [MappingEvent::Linked { auto: false, .. }]
    ));
    assert_eq!(shared.holder(&slot("prod", "c7")).as_deref(), Some(WF));
    // another workflow in the same environment cannot link to c7
    let other = MappingEvent::Discovered {
        environment_id: ENV.into(),
        n8n_workflow_id: "wf2".into(),
        observation: obs(1),
        canonical_id: None,
        status: MappingStatus::Untracked,
        auto_linked: false,
    };
    let refused = run(
        vec![other.clone()],
        MappingCommand::Link {
            canonical_id: id("c7"),
        },
        r.clone(),
    );
    assert!(
        matches!(refused, Err(DomainError::Validation { ref field, .. }) if field == "canonical_id")
    );
    // auto-link does not take it either: the workflow stays untracked
    let auto = MappingCommand::Observe {
        environment_id: id(ENV),
        n8n_workflow_id: id("wf3"),
        observation: obs(1),
        auto_link: Some(id("c7")),
    };
    let events = run(vec![], auto, r).unwrap();
    assert!(matches!(
        &events[..],
        [MappingEvent::Discovered {
            status: MappingStatus::Untracked,
            canonical_id: None,
            ..
        }]
    ));
}

#[test]
fn reappearing_with_a_taken_slot_comes_back_untracked() {
    let reservations = Arc::new(InMemoryReservations::default());
    futures_lite(reservations.claim(&slot("prod", "c1"), "someone-else")).unwrap();
    let history = vec![
        discovered(true),
        MappingEvent::Disappeared {
            from: MappingStatus::Linked,
            to: MappingStatus::Missing,
        },
    ];
    let events = run(history, observe(1, None), reservations).unwrap();
    assert!(matches!(
        &events[..],
        [MappingEvent::Reappeared {
            to: MappingStatus::Untracked,
            canonical_id: None,
            ..
        }]
    ));
}

#[test]
fn leaving_linked_is_flagged_for_slot_release() {
    assert!(MappingEvent::Unlinked {
        from: MappingStatus::Linked,
        canonical_id: "c".into(),
        reason: None
    }
    .leaves_linked());
    assert!(MappingEvent::Disappeared {
        from: MappingStatus::Linked,
        to: MappingStatus::Missing
    }
    .leaves_linked());
    assert!(!MappingEvent::Disappeared {
        from: MappingStatus::Ignored,
        to: MappingStatus::Ignored
    }
    .leaves_linked());
    assert!(!MappingEvent::Ignored {
        from: MappingStatus::Untracked,
        reason: None
    }
    .leaves_linked());
}

#[test]
fn an_auto_linked_mapping_knows_its_git_hash() {
    let r: Arc<dyn Reservations> = Arc::new(InMemoryReservations::default());
    let same = MappingCommand::ObserveGitHash {
        git_content_hash: hash(1),
    };
    // discovered already linked by its hash: repository sync has nothing to add
    assert_eq!(
        run(vec![discovered(true)], same.clone(), r.clone()),
        Ok(vec![])
    );
    // linked later by an observation that matched: the same
    let linked_later = vec![
        discovered(false),
        MappingEvent::Linked {
            from: MappingStatus::Untracked,
            canonical_id: "c1".into(),
            auto: true,
        },
    ];
    assert_eq!(run(linked_later, same.clone(), r.clone()), Ok(vec![]));
    // linked by hand: the Git hash is learned from Git
    let by_hand = vec![
        discovered(false),
        MappingEvent::Linked {
            from: MappingStatus::Untracked,
            canonical_id: "c1".into(),
            auto: false,
        },
    ];
    assert_eq!(run(by_hand, same, r).unwrap().len(), 1);
}
