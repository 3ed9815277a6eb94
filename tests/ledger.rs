//! The ledger's suite, written once over `Arc<dyn Ledger>` and run against SQLite (a file in a
//! temporary folder) and PostgreSQL (a fresh database per test on 127.0.0.1:5432, dropped at
//! the end), so the tests run in parallel under cargo-nextest.
//!
//! PostgreSQL: `AMTSBOTE_TEST_POSTGRES_URL` names the database to connect to for creating the
//! test databases (default: `postgres://postgres@127.0.0.1:5432/test`, then the same as
//! `root`). When none is reachable the PostgreSQL half is skipped loudly, and fails when
//! `CI=true`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use amtsbote::ledger::{
    self, Actor, FeedbackEffect, FeedbackEntry, FeedbackRecorded, FeedbackStatus, Ledger, LedgerError, ListFilter, NewRequest,
    PrintFeedback, Recorded, RequestId, RequestState,
};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

#[path = "support/postgres.rs"]
mod postgres_support;
use postgres_support::{TestDatabase, with_database};

use RequestState::*;

/// One test of the suite: gets a migrated, empty ledger and the URL it was opened from.
type Ctx = (Arc<dyn Ledger>, String);

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
    let ledger = ledger::open(&url).await.unwrap();
    ledger.migrate().await.unwrap();
    test((ledger, url)).await;
}

async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let url = database.url.clone();

    // Run the test as its own task so that a failing assertion still lets us drop the database.
    let outcome = {
        let url = url.clone();
        async move {
            let ledger = ledger::open(&url).await.unwrap();
            ledger.migrate().await.unwrap();
            test((ledger, url)).await;
        }
    };
    let outcome = tokio::spawn(outcome).await;
    database.drop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Runs each suite function once per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::with_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::with_postgres(super::$name).await;
                }
            )*
        }
    };
}

suite!(
    record_get_journal,
    record_starts_only_in_an_initial_state,
    re_record_by_source_is_idempotent,
    same_source_with_other_content_is_refused,
    duplicate_by_nachrichten_uuid,
    concurrent_records_of_one_message,
    a_burst_of_records_gets_each_its_own_answer,
    transition_is_compare_and_set,
    invalid_transition_is_refused,
    unknown_request,
    concurrent_transitions_one_winner,
    concurrent_transitions_of_many_requests,
    list_and_count_by_state,
    payload_round_trip,
    migrate_twice,
    entering_a_stage_input_writes_its_trigger_in_the_same_transaction,
    the_relay_deletes_triggers_only_after_the_push_succeeded,
    the_sweeper_finds_what_waits_without_a_trigger_and_retriggers_once,
    routing_keeps_the_decision_in_columns,
    a_further_attempt_is_scheduled_in_the_ledger_with_a_trigger_not_due_before_it,
    a_print_batch_is_made_once_per_date_and_its_files_move_their_letters_to_printed,
    concurrent_openings_of_one_nights_batch_make_one_batch,
    a_night_with_nothing_to_print_records_no_batch_and_its_date_stays_open,
    print_feedback_handed_over_posts_and_an_error_goes_into_the_next_batch,
    print_feedback_is_recorded_once_and_all_or_nothing,
    the_journal_refuses_delete,
    a_received_message_is_stored_once_and_moves_by_compare_and_set,
    concurrent_stores_of_one_received_message_store_it_once,
    a_claim_to_write_a_received_message_excludes_others_until_it_expires,
    access_tokens_are_kept_by_hash_and_revoked,
    notifications_are_written_with_the_journal_events_worth_an_email,
    an_email_is_claimed_by_one_sender_and_its_outcome_recorded,
    a_deferred_email_makes_its_domain_wait_and_the_others_go_on,
    a_dead_senders_emails_are_let_go_claimed_again_sending_unconfirmed,
);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn intake() -> Actor {
    Actor::system("intake")
}

fn new_request(tenant: &str, source: &str, uuid: Option<&str>) -> NewRequest {
    let payload = format!("<Ersuchen>{source}</Ersuchen>").into_bytes();
    NewRequest {
        tenant: tenant.into(),
        source: source.into(),
        sha256: fake_sha(&payload),
        nachrichten_uuid: uuid.map(str::to_owned),
        kind: "ersuchen".into(),
        test: false,
        payload,
        file_name: None,
    }
}

/// Not SHA-256, but a stable digest-shaped stand-in: the ledger only stores and compares it.
fn fake_sha(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}").repeat(4)
}

async fn record_new(l: &dyn Ledger, new: NewRequest) -> RequestId {
    match l.record(new, Received, &intake(), None).await.unwrap() {
        Recorded::New(id) => id,
        other => panic!("expected a new request, got {other:?}"),
    }
}

/// How many requests the ledger holds, in any state.
async fn recorded(l: &dyn Ledger) -> u64 {
    l.count_by_state().await.unwrap().iter().map(|(_, n)| n).sum()
}

async fn state_of(l: &dyn Ledger, id: RequestId) -> RequestState {
    l.get(id).await.unwrap().expect("request exists").state
}

// ---------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------

async fn record_get_journal((l, _): Ctx) {
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let mut new = new_request(
        "hamburg",
        "inbox:hamburg:0001.xml",
        Some("6f1c0d2e-0000-4000-8000-000000000001"),
    );
    new.test = true;
    new.file_name = Some("0001.xml".into());
    let sha = new.sha256.clone();
    let Recorded::New(id) = l
        .record(new, Received, &intake(), Some("from inbox"))
        .await
        .unwrap()
    else {
        panic!("not new")
    };
    assert!(id.get() > 0);

    let r = l.get(id).await.unwrap().unwrap();
    assert_eq!(r.id, id);
    assert_eq!(r.tenant, "hamburg");
    assert_eq!(r.source, "inbox:hamburg:0001.xml");
    assert_eq!(r.sha256, sha);
    assert_eq!(
        r.nachrichten_uuid.as_deref(),
        Some("6f1c0d2e-0000-4000-8000-000000000001")
    );
    assert_eq!(r.kind, "ersuchen");
    assert!(r.test);
    assert_eq!(r.file_name.as_deref(), Some("0001.xml"));
    assert_eq!(r.state, Received);
    assert_eq!(r.state_detail.as_deref(), Some("from inbox"));
    assert!(r.created_at >= before && r.created_at <= chrono::Utc::now());
    assert_eq!(r.created_at, r.updated_at);

    let journal = l.journal(id).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].seq, 1);
    assert_eq!(journal[0].from, None);
    assert_eq!(journal[0].to, Received);
    assert_eq!(journal[0].actor, intake());
    assert_eq!(journal[0].detail.as_deref(), Some("from inbox"));
    assert_eq!(journal[0].at, r.created_at);

    // The story goes on, and the journal tells it in order.
    l.transition(id, Received, Validated, &Actor::system("validate"), None)
        .await
        .unwrap();
    l.transition(
        id,
        Validated,
        Routed,
        &Actor::system("route"),
        Some("authority 09162000"),
    )
    .await
    .unwrap();
    l.transition(id, Routed, Transmitting, &Actor::system("transmit"), None)
        .await
        .unwrap();
    l.transition(
        id,
        Transmitting,
        Transmitting,
        &Actor::system("transmit"),
        Some("attempt 2"),
    )
    .await
    .unwrap();
    l.transition(
        id,
        Transmitting,
        Transmitted,
        &Actor::system("transmit"),
        None,
    )
    .await
    .unwrap();
    l.transition(id, Transmitted, Delivered, &Actor::system("report"), None)
        .await
        .unwrap();

    let journal = l.journal(id).await.unwrap();
    let steps: Vec<_> = journal.iter().map(|e| (e.seq, e.from, e.to)).collect();
    assert_eq!(
        steps,
        [
            (1, None, Received),
            (2, Some(Received), Validated),
            (3, Some(Validated), Routed),
            (4, Some(Routed), Transmitting),
            (5, Some(Transmitting), Transmitting),
            (6, Some(Transmitting), Transmitted),
            (7, Some(Transmitted), Delivered),
        ]
    );
    assert_eq!(journal[2].actor, Actor::system("route"));
    assert_eq!(journal[2].detail.as_deref(), Some("authority 09162000"));
    assert!(journal.windows(2).all(|w| w[0].at <= w[1].at));

    let r = l.get(id).await.unwrap().unwrap();
    assert_eq!(r.state, Delivered);
    assert_eq!(r.state_detail, None, "the newest event's detail");
    assert_eq!(r.updated_at, journal.last().unwrap().at);
    assert!(r.updated_at >= r.created_at);

    assert_eq!(
        l.find_by_source("inbox:hamburg:0001.xml").await.unwrap(),
        Some(r)
    );
    assert_eq!(
        l.find_by_source("inbox:hamburg:nope.xml").await.unwrap(),
        None
    );
}

async fn record_starts_only_in_an_initial_state((l, _): Ctx) {
    let id = match l
        .record(new_request("t", "http:a", None), Validated, &intake(), None)
        .await
        .unwrap()
    {
        Recorded::New(id) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(state_of(&*l, id).await, Validated);

    let id = match l
        .record(
            new_request("t", "http:b", None),
            Rejected,
            &intake(),
            Some("not XML"),
        )
        .await
        .unwrap()
    {
        Recorded::New(id) => id,
        other => panic!("{other:?}"),
    };
    let r = l.get(id).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.state_detail.as_deref()),
        (Rejected, Some("not XML"))
    );

    for state in [Routed, Delivered, Failed, Withdrawn] {
        let err = l
            .record(
                new_request("t", &format!("http:{state}"), None),
                state,
                &intake(),
                None,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, LedgerError::InvalidInitialState(s) if s == state),
            "{err}"
        );
        assert_eq!(
            l.find_by_source(&format!("http:{state}")).await.unwrap(),
            None
        );
    }
}

async fn re_record_by_source_is_idempotent((l, _): Ctx) {
    let new = new_request("t", "inbox:t:a.xml", Some("u-1"));
    let id = record_new(&*l, new.clone()).await;
    l.transition(id, Received, Validated, &Actor::system("validate"), None)
        .await
        .unwrap();

    // A re-run after a crash: same source, same content.
    for _ in 0..3 {
        let again = l
            .record(new.clone(), Received, &intake(), None)
            .await
            .unwrap();
        assert_eq!(again, Recorded::AlreadyRecorded(id));
    }
    // Nothing changed: state and journal are as they were.
    assert_eq!(state_of(&*l, id).await, Validated);
    assert_eq!(l.journal(id).await.unwrap().len(), 2);
    let all = l.list(&ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);

    // The same source without a uuid, too.
    let plain = new_request("t", "http:plain", None);
    let id2 = record_new(&*l, plain.clone()).await;
    assert_eq!(
        l.record(plain, Received, &intake(), None).await.unwrap(),
        Recorded::AlreadyRecorded(id2)
    );
}

async fn same_source_with_other_content_is_refused((l, _): Ctx) {
    let new = new_request("t", "inbox:t:a.xml", None);
    let id = record_new(&*l, new.clone()).await;
    let mut other = new;
    other.payload = b"<Ersuchen>other</Ersuchen>".to_vec();
    other.sha256 = fake_sha(&other.payload);
    let err = l
        .record(other, Received, &intake(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::SourceReused { key, existing } if key == "inbox:t:a.xml" && *existing == id),
        "{err}"
    );
    assert_eq!(
        l.payload(id).await.unwrap(),
        b"<Ersuchen>inbox:t:a.xml</Ersuchen>"
    );
}

async fn duplicate_by_nachrichten_uuid((l, _): Ctx) {
    let first = record_new(
        &*l,
        new_request("hamburg", "inbox:hamburg:1.xml", Some("u-42")),
    )
    .await;

    // The same message again, from another source: a duplicate, nothing recorded.
    let again = l
        .record(
            new_request("hamburg", "http:5b1e", Some("u-42")),
            Received,
            &intake(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(again, Recorded::Duplicate { existing: first });
    assert_eq!(l.find_by_source("http:5b1e").await.unwrap(), None);

    // Still a duplicate after the first one moved on.
    l.transition(
        first,
        Received,
        Rejected,
        &Actor::system("validate"),
        Some("bad sum"),
    )
    .await
    .unwrap();
    let again = l
        .record(
            new_request("hamburg", "http:5b1f", Some("u-42")),
            Received,
            &intake(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(again, Recorded::Duplicate { existing: first });

    // Another tenant's message with the same uuid is a duplicate too: a Nachrichten-UUID is
    // unique across the installation.
    let other_tenant = l
        .record(new_request("bremen", "inbox:bremen:1.xml", Some("u-42")), Received, &intake(), None)
        .await
        .unwrap();
    assert_eq!(other_tenant, Recorded::Duplicate { existing: first });
    assert_eq!(l.find_by_source("inbox:bremen:1.xml").await.unwrap(), None);

    // Messages without a uuid never collide.
    let a = record_new(&*l, new_request("hamburg", "http:n1", None)).await;
    let b = record_new(&*l, new_request("hamburg", "http:n2", None)).await;
    assert_ne!(a, b);

    let counts = l.count_by_state().await.unwrap();
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 3);
}

/// Tokens: stored with their hash only, names unique (revoked ones too), revocation seen
/// at once, the last use noted.
async fn access_tokens_are_kept_by_hash_and_revoked((l, _): Ctx) {
    use amtsbote::ledger::{LedgerError, NewToken};
    assert!(l.tokens().await.unwrap().is_empty());
    let new = NewToken { name: "prometheus".into(), role: "operator".into(), sha256: "ab".repeat(32) };
    let made = l.create_token(&new).await.unwrap();
    assert_eq!((made.name.as_str(), made.role.as_str(), made.sha256.as_str()), ("prometheus", "operator", new.sha256.as_str()));
    assert!(made.revoked_at.is_none() && made.last_used_at.is_none());
    let again = NewToken { sha256: "cd".repeat(32), ..new.clone() };
    assert!(matches!(l.create_token(&again).await, Err(LedgerError::TokenNameTaken(n)) if n == "prometheus"));
    l.create_token(&NewToken { name: "lemgo".into(), role: "tenant:demo".into(), sha256: "ef".repeat(32) }).await.unwrap();

    assert_eq!(l.token_by_hash(&new.sha256).await.unwrap().map(|t| t.name), Some("prometheus".into()));
    assert_eq!(l.token_by_hash(&"00".repeat(32)).await.unwrap(), None);
    let at = chrono::Utc::now();
    l.touch_token("prometheus", at).await.unwrap();
    let used = l.token_by_hash(&new.sha256).await.unwrap().unwrap().last_used_at.unwrap();
    assert!((used - at).num_milliseconds().abs() < 2, "{used} vs {at}");

    let revoked = l.revoke_token("prometheus").await.unwrap().unwrap();
    let when = revoked.revoked_at.unwrap();
    assert_eq!(l.token_by_hash(&new.sha256).await.unwrap().unwrap().revoked_at, Some(when));
    assert_eq!(l.revoke_token("prometheus").await.unwrap().unwrap().revoked_at, Some(when), "the first revocation stays");
    assert_eq!(l.revoke_token("nobody").await.unwrap(), None);
    let names: Vec<String> = l.tokens().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["prometheus", "lemgo"]);
    assert!(matches!(l.create_token(&again).await, Err(LedgerError::TokenNameTaken(_))), "a revoked token keeps its name");
}

async fn concurrent_records_of_one_message((l, _): Ctx) {
    // Eight intakes race with the same message: four re-runs of one source, four other
    // sources with the same uuid. Exactly one request comes out of it.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let l = l.clone();
        let source = if i % 2 == 0 {
            "inbox:t:same.xml".to_string()
        } else {
            format!("http:{i}")
        };
        tasks.push(tokio::spawn(async move {
            let mut new = new_request("t", &source, Some("u-race"));
            // The same content for every source, so re-runs of one source agree.
            new.payload = b"<Ersuchen>race</Ersuchen>".to_vec();
            new.sha256 = fake_sha(&new.payload);
            l.record(new, Received, &intake(), None).await.unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let winners: Vec<RequestId> = outcomes
        .iter()
        .filter_map(|o| match o {
            Recorded::New(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0];
    for o in &outcomes {
        match o {
            Recorded::New(id) | Recorded::AlreadyRecorded(id) => assert_eq!(*id, winner),
            Recorded::Duplicate { existing } => assert_eq!(*existing, winner),
        }
    }
    assert_eq!(l.list(&ListFilter::default()).await.unwrap().len(), 1);
    assert_eq!(l.journal(winner).await.unwrap().len(), 1);
}

async fn a_burst_of_records_gets_each_its_own_answer((l, _): Ctx) {
    // Two bursts (on SQLite each is written in batches, many records per transaction):
    // 200 new records at once, then 100 at once that each conflict with one of them in
    // one of three ways. Each caller gets the answer that belongs to its own record,
    // whichever batch it fell into. (Conflicts inside one batch: the test above.)
    let original = |i: usize| new_request("t", &format!("inbox:t:{i}.xml"), Some(&format!("u-{i}")));
    let burst = |requests: Vec<NewRequest>| {
        let l = l.clone();
        async move {
            let tasks: Vec<_> = requests
                .into_iter()
                .map(|r| {
                    let l = l.clone();
                    tokio::spawn(async move { l.record(r, Received, &intake(), None).await })
                })
                .collect();
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(task.await.unwrap());
            }
            outcomes
        }
    };
    let mut ids = Vec::new();
    for (i, outcome) in burst((0..200).map(original).collect()).await.into_iter().enumerate() {
        match outcome {
            Ok(Recorded::New(id)) => ids.push(id),
            other => panic!("record {i}: {other:?}"),
        }
    }
    let conflicting: Vec<NewRequest> = (0..100)
        .map(|i| match i % 3 {
            // The same source with the same content: a re-run after a crash.
            0 => original(i),
            // Another source with a Nachrichten-UUID already taken: a duplicate.
            1 => new_request("t", &format!("http:{i}"), Some(&format!("u-{i}"))),
            // The same source with other content: the intake reused a key.
            _ => {
                let mut r = original(i);
                r.payload = b"<Ersuchen>other</Ersuchen>".to_vec();
                r.sha256 = fake_sha(&r.payload);
                r
            }
        })
        .collect();
    for (i, outcome) in burst(conflicting).await.into_iter().enumerate() {
        match (i % 3, outcome) {
            (0, Ok(Recorded::AlreadyRecorded(id))) => assert_eq!(id, ids[i]),
            (1, Ok(Recorded::Duplicate { existing })) => assert_eq!(existing, ids[i]),
            (2, Err(LedgerError::SourceReused { existing, .. })) => assert_eq!(existing, ids[i]),
            (_, other) => panic!("record {i}: unexpected {other:?}"),
        }
    }
    assert_eq!(recorded(&*l).await, 200);
    for id in ids {
        assert_eq!(l.journal(id).await.unwrap().len(), 1);
    }
}

async fn transition_is_compare_and_set((l, _): Ctx) {
    let id = record_new(&*l, new_request("t", "http:1", None)).await;
    let route = Actor::system("route");

    l.transition(id, Received, Validated, &route, None)
        .await
        .unwrap();
    // A second run of the same job finds the request moved on.
    let err = l
        .transition(id, Received, Validated, &route, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::Conflict { id: i, expected: Received, current: Validated } if i == id),
        "{err}"
    );
    // A stale view of the state loses, too.
    let err = l
        .transition(id, Received, Rejected, &route, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::Conflict {
                current: Validated,
                ..
            }
        ),
        "{err}"
    );
    // Neither failure left a trace.
    assert_eq!(l.journal(id).await.unwrap().len(), 2);
    assert_eq!(state_of(&*l, id).await, Validated);

    // Operators drive the side states.
    l.transition(
        id,
        Validated,
        Unroutable,
        &route,
        Some("two authorities match"),
    )
    .await
    .unwrap();
    let r = l.get(id).await.unwrap().unwrap();
    assert_eq!(r.state_detail.as_deref(), Some("two authorities match"));
    l.transition(
        id,
        Unroutable,
        Routed,
        &Actor::operator("mueller"),
        Some("chose 09162000"),
    )
    .await
    .unwrap();
    l.transition(id, Routed, AwaitingPrint, &route, None)
        .await
        .unwrap();
    l.transition(id, AwaitingPrint, Printed, &Actor::system("print"), None)
        .await
        .unwrap();
    l.transition(id, Printed, Posted, &Actor::system("reconcile"), None)
        .await
        .unwrap();
    let journal = l.journal(id).await.unwrap();
    assert_eq!(journal.last().unwrap().to, Posted);
    assert_eq!(journal[3].actor, Actor::operator("mueller"));
    assert_eq!(journal.len(), 7);
}

async fn invalid_transition_is_refused((l, _): Ctx) {
    let id = record_new(&*l, new_request("t", "http:1", None)).await;
    let err = l
        .transition(id, Received, Transmitting, &intake(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::InvalidTransition {
                from: Received,
                to: Transmitting
            }
        ),
        "{err}"
    );
    // Refused even when `from` is not the current state: the rule is checked first.
    let err = l
        .transition(id, Delivered, Received, &intake(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InvalidTransition { .. }),
        "{err}"
    );

    l.transition(id, Received, Withdrawn, &Actor::operator("mueller"), None)
        .await
        .unwrap();
    for to in RequestState::ALL {
        let err = l
            .transition(id, Withdrawn, to, &intake(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, LedgerError::InvalidTransition { .. }),
            "{to}: {err}"
        );
    }
    assert_eq!(state_of(&*l, id).await, Withdrawn);
    assert_eq!(l.journal(id).await.unwrap().len(), 2);
}

async fn unknown_request((l, _): Ctx) {
    let nobody = RequestId(987_654);
    assert_eq!(l.get(nobody).await.unwrap(), None);
    assert!(matches!(l.journal(nobody).await, Err(LedgerError::NotFound(id)) if id == nobody));
    assert!(matches!(l.payload(nobody).await, Err(LedgerError::NotFound(id)) if id == nobody));
    let err = l
        .transition(nobody, Received, Validated, &intake(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::NotFound(id) if id == nobody),
        "{err}"
    );
}

async fn concurrent_transitions_one_winner((l, _): Ctx) {
    let id = record_new(&*l, new_request("t", "http:1", None)).await;
    l.transition(id, Received, Validated, &intake(), None)
        .await
        .unwrap();
    l.transition(id, Validated, Routed, &intake(), None)
        .await
        .unwrap();

    // Eight workers got the same job; they race for different next states.
    let targets = [
        Transmitting,
        AwaitingPrint,
        Withdrawn,
        Transmitting,
        AwaitingPrint,
        Withdrawn,
        Transmitting,
        AwaitingPrint,
    ];
    let barrier = Arc::new(tokio::sync::Barrier::new(targets.len()));
    let mut tasks = Vec::new();
    for (i, to) in targets.into_iter().enumerate() {
        let l = l.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let result = l
                .transition(id, Routed, to, &Actor::system(format!("worker-{i}")), None)
                .await;
            (to, i, result)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (to, i, result) = task.await.unwrap();
        match result {
            Ok(()) => winners.push((to, i)),
            Err(LedgerError::Conflict {
                current,
                expected: Routed,
                ..
            }) => assert_ne!(current, Routed),
            Err(e) => panic!("worker {i}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (to, i) = winners[0];
    assert_eq!(state_of(&*l, id).await, to);
    let journal = l.journal(id).await.unwrap();
    assert_eq!(journal.len(), 4);
    assert_eq!(journal[3].actor, Actor::system(format!("worker-{i}")));
    assert_eq!((journal[3].from, journal[3].to), (Some(Routed), to));
}

async fn concurrent_transitions_of_many_requests((l, _): Ctx) {
    // Workers moving different requests at the same time do not get in each other's way.
    let mut ids = Vec::new();
    for i in 0..16 {
        ids.push(
            record_new(
                &*l,
                new_request("t", &format!("http:{i}"), Some(&format!("u-{i}"))),
            )
            .await,
        );
    }
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            let a = Actor::system("pipeline");
            l.transition(id, Received, Validated, &a, None).await?;
            l.transition(id, Validated, Routed, &a, None).await?;
            l.transition(id, Routed, Transmitting, &a, None).await?;
            l.transition(id, Transmitting, Transmitted, &a, None).await?;
            l.transition(id, Transmitted, Delivered, &a, None).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    for id in ids {
        assert_eq!(state_of(&*l, id).await, Delivered);
        let seqs: Vec<u32> = l.journal(id).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    }
}

async fn list_and_count_by_state((l, _): Ctx) {
    let empty = l.count_by_state().await.unwrap();
    assert_eq!(empty.len(), RequestState::ALL.len());
    assert!(empty.iter().all(|(_, n)| *n == 0));
    assert_eq!(
        empty.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        RequestState::ALL
    );
    assert!(l.list(&ListFilter::default()).await.unwrap().is_empty());

    // hamburg: 5 requests, bremen: 3. Some move on.
    let mut ids = Vec::new();
    for i in 0..8 {
        let tenant = if i < 5 { "hamburg" } else { "bremen" };
        ids.push(record_new(&*l, new_request(tenant, &format!("http:{i}"), None)).await);
    }
    let sys = Actor::system("validate");
    for &id in &ids[0..3] {
        l.transition(id, Received, Validated, &sys, None)
            .await
            .unwrap();
    }
    l.transition(ids[5], Received, Rejected, &sys, Some("bad"))
        .await
        .unwrap();
    l.transition(ids[6], Received, Validated, &sys, None)
        .await
        .unwrap();

    let counts = l.count_by_state().await.unwrap();
    let count = |state| counts.iter().find(|(s, _)| *s == state).unwrap().1;
    assert_eq!(count(Received), 3);
    assert_eq!(count(Validated), 4);
    assert_eq!(count(Rejected), 1);
    assert_eq!(count(Delivered), 0);
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 8);

    // Newest first.
    let all = l.list(&ListFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );

    let validated = l
        .list(&ListFilter::default().state(Validated))
        .await
        .unwrap();
    assert_eq!(
        validated.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[6], ids[2], ids[1], ids[0]]
    );

    let bremen = l
        .list(&ListFilter::default().tenant("bremen"))
        .await
        .unwrap();
    assert_eq!(
        bremen.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[7], ids[6], ids[5]]
    );

    let both = l
        .list(&ListFilter::default().tenant("hamburg").state(Received))
        .await
        .unwrap();
    assert_eq!(
        both.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    assert!(
        both.iter()
            .all(|r| r.tenant == "hamburg" && r.state == Received)
    );

    let nobody = l.list(&ListFilter::default().tenant("köln")).await.unwrap();
    assert!(nobody.is_empty());

    // Paging.
    let page1 = l.list(&ListFilter::default().limit(3)).await.unwrap();
    let page2 = l
        .list(&ListFilter::default().limit(3).offset(3))
        .await
        .unwrap();
    let page3 = l
        .list(&ListFilter::default().limit(3).offset(6))
        .await
        .unwrap();
    let page4 = l
        .list(&ListFilter::default().limit(3).offset(9))
        .await
        .unwrap();
    assert_eq!(
        (page1.len(), page2.len(), page3.len(), page4.len()),
        (3, 3, 2, 0)
    );
    let paged: Vec<_> = [page1, page2, page3]
        .concat()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(paged, all.iter().map(|r| r.id).collect::<Vec<_>>());
    assert!(
        l.list(&ListFilter::default().limit(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        l.list(&ListFilter::default().limit(u32::MAX))
            .await
            .unwrap()
            .len(),
        8
    );
    assert!(
        l.list(&ListFilter::default().offset(u64::MAX))
            .await
            .unwrap()
            .is_empty()
    );

    // Listed requests are the same as fetched ones.
    for r in &all {
        assert_eq!(&l.get(r.id).await.unwrap().unwrap(), r);
    }
}

async fn payload_round_trip((l, _): Ctx) {
    // Arbitrary bytes, not only UTF-8: a payload is kept exactly as received.
    let mut payload: Vec<u8> = (0..=255u8).collect();
    payload.extend_from_slice("<Schuldner>Müller, Straße 1</Schuldner>".as_bytes());
    payload.extend(std::iter::repeat_n(0u8, 3));
    payload.extend((0..300_000u32).map(|i| (i % 251) as u8));
    let mut new = new_request("t", "http:bin", None);
    new.payload = payload.clone();
    new.sha256 = fake_sha(&payload);
    let id = record_new(&*l, new).await;
    assert_eq!(l.payload(id).await.unwrap(), payload);

    let mut empty = new_request("t", "http:empty", None);
    empty.payload = Vec::new();
    let id = record_new(&*l, empty).await;
    assert_eq!(l.payload(id).await.unwrap(), Vec::<u8>::new());
}

async fn migrate_twice((l, url): Ctx) {
    let id = record_new(&*l, new_request("t", "http:1", None)).await;
    l.migrate().await.unwrap();
    l.migrate().await.unwrap();

    // Another process opening the same database and migrating it finds everything in place.
    let other = ledger::open(&url).await.unwrap();
    other.migrate().await.unwrap();
    assert_eq!(other.get(id).await.unwrap().unwrap().source, "http:1");
    let id2 = record_new(&*other, new_request("t", "http:2", None)).await;
    assert!(id2 > id);
    assert_eq!(l.get(id2).await.unwrap().unwrap().source, "http:2");

    // Several migrating at once on a migrated database: all fine.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let ledger = ledger::open(&url).await.unwrap();
            ledger.migrate().await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The outbox
// ---------------------------------------------------------------------------------------

/// Makes a closure a push for every lifetime of its triggers.
fn pusher<F: for<'t> Fn(&'t [ledger::Trigger]) -> ledger::PushFuture<'t> + Send + Sync>(f: F) -> F {
    f
}

/// Takes every trigger in the outbox through `relay_outbox`, with a push that succeeds.
async fn drain_outbox(l: &dyn Ledger) -> Vec<ledger::Trigger> {
    let seen = std::sync::Mutex::new(Vec::new());
    let push = pusher(|t| {
        seen.lock().unwrap().extend_from_slice(t);
        Box::pin(async { Ok(()) })
    });
    while l.relay_outbox(100, &push).await.unwrap() > 0 {}
    seen.into_inner().unwrap()
}

async fn entering_a_stage_input_writes_its_trigger_in_the_same_transaction((l, _): Ctx) {
    use amtsbote::queue::Queue;
    // Recorded as validated: a route trigger for the first event.
    let Recorded::New(a) = l.record(new_request("t", "http:a", None), Validated, &intake(), None).await.unwrap() else { panic!() };
    // Recorded as received, then validated: the trigger names the second event.
    let b = record_new(&*l, new_request("t", "http:b", None)).await;
    assert_eq!(l.outbox_len().await.unwrap(), 1, "received is no stage's input");
    l.transition(b, Received, Validated, &intake(), None).await.unwrap();
    // A rejected one gets none, and a re-record of the same source adds none.
    l.record(new_request("t", "http:c", None), Rejected, &intake(), None).await.unwrap();
    l.record(new_request("t", "http:a", None), Validated, &intake(), None).await.unwrap();
    assert_eq!(l.outbox_len().await.unwrap(), 2);

    let triggers = drain_outbox(&*l).await;
    let got: Vec<(RequestId, Queue, u32)> = triggers.iter().map(|t| (t.request, t.queue, t.seq)).collect();
    assert_eq!(got, vec![(a, Queue::Route, 1), (b, Queue::Route, 2)], "oldest first");
    assert_eq!(triggers[0].key(), format!("{a}:1"));
    assert_eq!(l.outbox_len().await.unwrap(), 0);
    // A failed compare-and-set writes no trigger either.
    assert!(l.transition(b, Received, Validated, &intake(), None).await.is_err());
    assert_eq!(l.outbox_len().await.unwrap(), 0);
}

async fn the_relay_deletes_triggers_only_after_the_push_succeeded((l, _): Ctx) {
    for n in 0..3 {
        l.record(new_request("t", &format!("http:{n}"), None), Validated, &intake(), None).await.unwrap();
    }
    let failing = pusher(|_| Box::pin(async { Err("queue database is locked".to_string()) }));
    let err = l.relay_outbox(2, &failing).await.unwrap_err();
    assert!(matches!(err, LedgerError::Relay(_)), "{err}");
    assert_eq!(l.outbox_len().await.unwrap(), 3, "nothing deleted when the push failed");
    let seen = drain_outbox(&*l).await;
    assert_eq!(seen.len(), 3);
    assert_eq!(l.outbox_len().await.unwrap(), 0);
}

async fn the_sweeper_finds_what_waits_without_a_trigger_and_retriggers_once((l, _): Ctx) {
    use amtsbote::queue::Queue;
    let Recorded::New(a) = l.record(new_request("t", "http:a", None), Validated, &intake(), None).await.unwrap() else { panic!() };
    let Recorded::New(b) = l.record(new_request("t", "http:b", None), Validated, &intake(), None).await.unwrap() else { panic!() };
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    // While their triggers wait in the outbox, nothing is missing.
    assert!(l.waiting_without_trigger(Validated, later, RequestId(0), 10).await.unwrap().is_empty());
    drain_outbox(&*l).await;
    // Pushed (the outbox is empty): both are candidates once old enough, in pages.
    assert!(l.waiting_without_trigger(Validated, chrono::Utc::now() - chrono::Duration::seconds(60), RequestId(0), 10).await.unwrap().is_empty(), "too young");
    assert_eq!(l.waiting_without_trigger(Validated, later, RequestId(0), 10).await.unwrap(), vec![(a, 1), (b, 1)]);
    assert_eq!(l.waiting_without_trigger(Validated, later, a, 10).await.unwrap(), vec![(b, 1)]);
    // Retriggered once; a second time, or for a stale seq, or after the request moved on: no.
    assert!(l.retrigger(a, 1, Queue::Route).await.unwrap());
    assert!(!l.retrigger(a, 1, Queue::Route).await.unwrap());
    assert!(!l.retrigger(b, 7, Queue::Route).await.unwrap());
    l.transition(b, Validated, Unroutable, &Actor::system("route"), None).await.unwrap();
    assert!(!l.retrigger(b, 1, Queue::Route).await.unwrap());
    let again = drain_outbox(&*l).await;
    assert_eq!(again.iter().map(|t| (t.request, t.seq)).collect::<Vec<_>>(), vec![(a, 1)]);
}

async fn routing_keeps_the_decision_in_columns((l, _): Ctx) {
    let Recorded::New(id) = l.record(new_request("t", "http:a", None), Validated, &intake(), None).await.unwrap() else { panic!() };
    assert_eq!(l.get(id).await.unwrap().unwrap().routed, None);
    let to = ledger::RoutedTo {
        kennung: "vbh:053150000001".into(),
        name: "Stadt Köln, Steueramt".into(),
        channel: ledger::Channel::Xta,
        xta_reader: Some("xta:koeln".into()),
        xta_service: Some("urn:xoev-de:xamtshilfe".into()),
        directory_generation: "gen-1".into(),
    };
    l.route(id, Validated, &to, &Actor::system("route"), Some("to vbh:053150000001")).await.unwrap();
    let r = l.get(id).await.unwrap().unwrap();
    assert_eq!((r.state, r.seq), (Routed, 2));
    assert_eq!(r.routed.as_ref(), Some(&to));
    // A second routing of the same request loses the compare-and-set and changes nothing.
    let err = l.route(id, Validated, &to, &Actor::system("route"), None).await.unwrap_err();
    assert!(matches!(err, LedgerError::Conflict { .. }), "{err}");
    assert_eq!(l.journal(id).await.unwrap().iter().filter(|e| e.to == Routed).count(), 1);
    // Later moves keep the columns.
    l.transition(id, Routed, AwaitingPrint, &Actor::system("route"), None).await.unwrap();
    assert_eq!(l.get(id).await.unwrap().unwrap().routed, Some(to));
}

async fn a_further_attempt_is_scheduled_in_the_ledger_with_a_trigger_not_due_before_it((l, _): Ctx) {
    use amtsbote::queue::Queue;
    let Recorded::New(id) = l.record(new_request("t", "http:a", None), Validated, &intake(), None).await.unwrap() else { panic!() };
    drain_outbox(&*l).await;
    let transmit = Actor::system("transmit");
    l.transition(id, Validated, Routed, &transmit, None).await.unwrap();
    l.begin_transmission(id, Routed, "urn:de:xta:messageid:t:1", &transmit, None).await.unwrap();
    drain_outbox(&*l).await;
    let next_at = chrono::Utc::now() + chrono::Duration::seconds(90);
    l.schedule_attempt(id, Transmitting, Queue::Transmit, 1, next_at, &transmit, Some("attempt 1 of 8: sendMessage: HTTP 503")).await.unwrap();
    let r = l.get(id).await.unwrap().unwrap();
    assert_eq!((r.state, r.seq, r.attempts), (Transmitting, 4, 1));
    let stored = r.next_attempt_at.unwrap();
    assert!((stored - next_at).num_milliseconds().abs() < 1000, "{stored} vs {next_at}");
    assert_eq!(r.state_detail.as_deref(), Some("attempt 1 of 8: sendMessage: HTTP 503"));
    let last = l.journal(id).await.unwrap().pop().unwrap();
    assert_eq!((last.seq, last.from, last.to), (4, Some(Transmitting), Transmitting));
    // Its trigger, for the stage named, keyed by the new event and not due before the time.
    let triggers = drain_outbox(&*l).await;
    assert_eq!(triggers.iter().map(|t| (t.request, t.queue, t.seq)).collect::<Vec<_>>(), vec![(id, Queue::Transmit, 4)]);
    let due = triggers[0].not_before.unwrap();
    assert!((due - next_at).num_milliseconds().abs() < 1000, "{due} vs {next_at}");
    // A request that moved on is not scheduled (compare-and-set), and nothing is written.
    let err = l.schedule_attempt(id, Routed, Queue::Transmit, 2, next_at, &transmit, None).await.unwrap_err();
    assert!(matches!(err, LedgerError::Conflict { .. }), "{err}");
    assert_eq!(l.outbox_len().await.unwrap(), 0);
    // A change of state starts the count afresh.
    l.transition(id, Transmitting, Transmitted, &transmit, None).await.unwrap();
    let r = l.get(id).await.unwrap().unwrap();
    assert_eq!((r.attempts, r.next_attempt_at), (0, None));
    // No further try of what is finished.
    l.transition(id, Transmitted, Delivered, &Actor::system("report"), None).await.unwrap();
    let err = l.schedule_attempt(id, Delivered, Queue::Report, 1, next_at, &transmit, None).await.unwrap_err();
    assert!(matches!(err, LedgerError::InvalidTransition { .. }), "{err}");
}

/// `n` requests waiting for print (recorded, then moved along as the stages would).
async fn awaiting_print(l: &dyn Ledger, n: usize, prefix: &str) -> Vec<RequestId> {
    let route = Actor::system("route");
    let mut ids = Vec::new();
    for i in 0..n {
        let Recorded::New(id) = l.record(new_request("t", &format!("http:{prefix}{i}"), None), Validated, &intake(), None).await.unwrap() else { panic!() };
        l.transition(id, Validated, Routed, &route, None).await.unwrap();
        l.transition(id, Routed, AwaitingPrint, &route, None).await.unwrap();
        ids.push(id);
    }
    ids
}

async fn a_print_batch_is_made_once_per_date_and_its_files_move_their_letters_to_printed((l, _): Ctx) {
    let ids = awaiting_print(&*l, 4, "p").await;
    let date = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    // Letters numbered in the order given; one that is not awaiting print is left out.
    l.transition(ids[2], AwaitingPrint, Withdrawn, &Actor::operator("op"), None).await.unwrap();
    let order = [ids[3], ids[0], ids[2], ids[1]];
    let batch = l.open_print_batch(date, "B20261201", &order).await.unwrap().unwrap();
    assert!(batch.created);
    assert_eq!(batch.letters, vec![(ids[3], 1), (ids[0], 2), (ids[1], 3)]);
    assert_eq!((batch.files_done.clone(), batch.finished), (vec![], false));
    let r = l.get(ids[0]).await.unwrap().unwrap();
    assert_eq!((r.print_batch.as_deref(), r.letter_number), (Some("B20261201"), Some(2)));
    // A file's letters read at once: the requests of exactly those letters, with payloads.
    let mut inputs = l.print_inputs("B20261201", &[(ids[3], 1), (ids[1], 3)]).await.unwrap();
    inputs.sort_by_key(|(r, _)| r.id);
    assert_eq!(inputs.iter().map(|(r, _)| r.id).collect::<Vec<_>>(), vec![ids[1], ids[3]]);
    for (r, payload) in &inputs {
        assert_eq!(payload, &l.payload(r.id).await.unwrap());
    }
    // Keyset paging of what awaits print: by id, above the one given.
    let after: Vec<RequestId> = l.awaiting_print_after(ids[0], 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(after, vec![ids[1], ids[3]]);
    assert_eq!(l.awaiting_print_after(RequestId(0), 1).await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[0]]);
    // The same date again — whatever is passed — gives the same batch, and makes no other.
    let again = l.open_print_batch(date, "B20261201-other", &[ids[1]]).await.unwrap().unwrap();
    assert!(!again.created);
    assert_eq!((again.batch_id.as_str(), again.letters.clone()), ("B20261201", batch.letters.clone()));
    // One writer at a time, until its lease ends.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(60);
    assert_eq!(l.claim_print_batch("B20261201", "a", soon, None).await.unwrap(), None);
    assert_eq!(l.claim_print_batch("B20261201", "a", soon, None).await.unwrap(), None, "its own lease again");
    assert_eq!(l.claim_print_batch("B20261201", "b", soon, None).await.unwrap().as_deref(), Some("a"));
    // A writer known to be gone is taken over at once.
    assert_eq!(l.claim_print_batch("B20261201", "b", soon, Some("a")).await.unwrap(), None);
    assert_eq!(l.claim_print_batch("B20261201", "a", soon, None).await.unwrap().as_deref(), Some("b"));
    // A file handed off: its letters are printed, with batch, letter and file in the journal.
    let print = Actor::system("print");
    l.print_file_done("B20261201", 1, "B20261201-001.pdf", "ab12", &batch.letters[..2], &[], &print).await.unwrap();
    assert_eq!(l.get(ids[3]).await.unwrap().unwrap().state, Printed);
    assert_eq!(l.get(ids[1]).await.unwrap().unwrap().state, AwaitingPrint);
    let last = l.journal(ids[0]).await.unwrap().pop().unwrap();
    assert_eq!((last.from, last.to), (Some(AwaitingPrint), Printed));
    assert_eq!(last.detail.as_deref(), Some("batch B20261201, letter 2, file B20261201-001.pdf"));
    // Recorded twice: nothing more happens.
    l.print_file_done("B20261201", 1, "B20261201-001.pdf", "ab12", &batch.letters[..2], &[], &print).await.unwrap();
    assert_eq!(l.journal(ids[0]).await.unwrap().iter().filter(|e| e.to == Printed).count(), 1);
    l.print_file_done("B20261201", 2, "B20261201-002.pdf", "cd34", &batch.letters[2..], &[], &print).await.unwrap();
    l.finish_print_batch("B20261201").await.unwrap();
    let done = l.open_print_batch(date, "B20261201", &[]).await.unwrap().unwrap();
    assert_eq!((done.files_done, done.finished), (vec![1, 2], true));
    // A request printed in one batch goes into no other: the next date gets no batch.
    assert_eq!(l.open_print_batch(date.succ_opt().unwrap(), "B20261202", &ids).await.unwrap(), None);
}

/// A run that finds nothing awaiting print records no batch: the date stays open, and a
/// later run of the same date (requests arrived since) makes the batch with them.
async fn a_night_with_nothing_to_print_records_no_batch_and_its_date_stays_open((l, _): Ctx) {
    let date = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    assert_eq!(l.open_print_batch(date, "B20261201", &[]).await.unwrap(), None);
    // Candidates that moved on meanwhile (none can take a number) count as nothing.
    let ids = awaiting_print(&*l, 2, "e").await;
    l.transition(ids[0], AwaitingPrint, Withdrawn, &Actor::operator("op"), None).await.unwrap();
    assert_eq!(l.open_print_batch(date, "B20261201", &[ids[0]]).await.unwrap(), None);
    assert!(l.print_batches().await.unwrap().is_empty(), "no batch recorded");
    assert_eq!(l.get(ids[1]).await.unwrap().unwrap().print_batch, None);
    let batch = l.open_print_batch(date, "B20261201", &[ids[1]]).await.unwrap().unwrap();
    assert!(batch.created);
    assert_eq!(batch.letters, vec![(ids[1], 1)]);
    assert_eq!(l.print_batches().await.unwrap().len(), 1);
}

/// `n` letters of the batch of `date`, handed off in one file: (batch id, its letters).
async fn printed_batch(l: &dyn Ledger, n: usize, date: chrono::NaiveDate) -> (String, Vec<(RequestId, u32)>) {
    let ids = awaiting_print(l, n, &format!("f{date}-")).await;
    let batch_id = format!("B{}", date.format("%Y%m%d"));
    let batch = l.open_print_batch(date, &batch_id, &ids).await.unwrap().unwrap();
    l.print_file_done(&batch_id, 1, &format!("{batch_id}-001.pdf"), "ab12", &batch.letters, &[], &Actor::system("print")).await.unwrap();
    l.finish_print_batch(&batch_id).await.unwrap();
    (batch_id, batch.letters)
}

fn feedback(batch_id: &str, letter_number: u32, status: FeedbackStatus, minute: u32, reason: Option<&str>) -> PrintFeedback {
    let at = chrono::DateTime::parse_from_rfc3339(&format!("2026-12-02T06:{minute:02}:00+01:00")).unwrap().to_utc();
    PrintFeedback { batch_id: batch_id.into(), letter_number, status, at, reason: reason.map(str::to_owned), file_name: "fb.csv".into(), line: letter_number + 1 }
}

async fn print_feedback_handed_over_posts_and_an_error_goes_into_the_next_batch((l, _): Ctx) {
    let date = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    let (batch_id, letters) = printed_batch(&*l, 3, date).await;
    let [(a, 1), (b, 2), (c, 3)] = letters[..] else { panic!("{letters:?}") };
    let entry = |number, request, status, minute, reason, effect| FeedbackEntry { feedback: feedback(&batch_id, number, status, minute, reason), request, effect };
    let op = Actor::operator("op");
    let done = l
        .record_print_feedback(
            &[
                entry(1, a, FeedbackStatus::Printed, 1, None, FeedbackEffect::Record),
                entry(1, a, FeedbackStatus::HandedOver, 30, None, FeedbackEffect::Posted),
                entry(2, b, FeedbackStatus::Error, 2, Some("paper jam"), FeedbackEffect::Reprint),
                entry(3, c, FeedbackStatus::Enveloped, 3, None, FeedbackEffect::Record),
            ],
            &op,
        )
        .await
        .unwrap();
    assert_eq!(done, FeedbackRecorded { new: 4, before: 0, posted: 1, reprint: 1 });
    // handed over → posted, with batch and letter in the journal.
    let ra = l.get(a).await.unwrap().unwrap();
    assert_eq!(ra.state, Posted);
    let last = l.journal(a).await.unwrap().pop().unwrap();
    assert_eq!((last.from, last.to, last.actor), (Some(Printed), Posted, op.clone()));
    assert_eq!(last.detail.as_deref(), Some("batch B20261201, letter 1: handed over to the post at 2026-12-02 05:30:00 UTC (print centre)"));
    // error → awaiting print again, with the reason, and out of its batch.
    let rb = l.get(b).await.unwrap().unwrap();
    assert_eq!((rb.state, rb.print_batch.as_deref(), rb.letter_number), (AwaitingPrint, None, None));
    assert!(rb.state_detail.as_deref().unwrap().contains("print centre error at 2026-12-02 05:02:00 UTC: paper jam"), "{:?}", rb.state_detail);
    // printed/enveloped: recorded, the request stays printed.
    assert_eq!(l.get(c).await.unwrap().unwrap().state, Printed);
    // The batch still has its three letters, with their feedback.
    let shown = l.print_letters(&batch_id).await.unwrap();
    assert_eq!(shown.iter().map(|x| (x.letter_number, x.request, x.state, x.in_batch, x.file_no)).collect::<Vec<_>>(), vec![
        (1, a, Posted, true, Some(1)),
        (2, b, AwaitingPrint, false, Some(1)),
        (3, c, Printed, true, Some(1)),
    ]);
    assert_eq!(shown[0].feedback.iter().map(|f| f.status).collect::<Vec<_>>(), [FeedbackStatus::Printed, FeedbackStatus::HandedOver]);
    assert_eq!(shown[1].feedback[0].reason.as_deref(), Some("paper jam"));
    let batches = l.print_batches().await.unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!((batches[0].letters, batches[0].files, batches[0].posted, batches[0].errors, batches[0].no_feedback), (3, 1, 1, 1, 0));
    assert!(batches[0].finished_at.is_some());
    assert_eq!(l.print_files(&batch_id).await.unwrap().iter().map(|f| (f.file_no, f.file_name.as_str(), f.letters)).collect::<Vec<_>>(), [(1, "B20261201-001.pdf", 1 + 2)]);
    // The next night's batch takes the letter that came back, under a number of its own.
    let next_date = date.succ_opt().unwrap();
    let next = l.open_print_batch(next_date, "B20261202", &[c, b, a]).await.unwrap().unwrap();
    assert_eq!(next.letters, vec![(b, 1)]);
    // The first batch, opened again (a run of that date), still plans its three letters.
    assert_eq!(l.open_print_batch(date, &batch_id, &[]).await.unwrap().unwrap().letters, letters);
    let printed_again = l.journal(b).await.unwrap();
    assert_eq!(printed_again.iter().filter(|e| e.to == AwaitingPrint).count(), 2, "sent to print, then back after the error");
}

async fn print_feedback_is_recorded_once_and_all_or_nothing((l, _): Ctx) {
    let date = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    let (batch_id, letters) = printed_batch(&*l, 2, date).await;
    let [(a, 1), (b, 2)] = letters[..] else { panic!("{letters:?}") };
    let op = Actor::operator("op");
    let entries = vec![
        FeedbackEntry { feedback: feedback(&batch_id, 1, FeedbackStatus::HandedOver, 10, None), request: a, effect: FeedbackEffect::Posted },
        FeedbackEntry { feedback: feedback(&batch_id, 2, FeedbackStatus::Printed, 11, None), request: b, effect: FeedbackEffect::Record },
    ];
    assert_eq!(l.record_print_feedback(&entries, &op).await.unwrap(), FeedbackRecorded { new: 2, before: 0, posted: 1, reprint: 0 });
    let journal = l.journal(a).await.unwrap();
    // The same lines again: nothing changes.
    assert_eq!(l.record_print_feedback(&entries, &op).await.unwrap(), FeedbackRecorded { new: 0, before: 2, posted: 0, reprint: 0 });
    assert_eq!(l.journal(a).await.unwrap(), journal);
    assert_eq!(l.print_letters(&batch_id).await.unwrap()[0].feedback.len(), 1);
    // An effect on a letter that is no longer printed as that letter: nothing at all recorded.
    let moved = vec![
        FeedbackEntry { feedback: feedback(&batch_id, 2, FeedbackStatus::Enveloped, 12, None), request: b, effect: FeedbackEffect::Record },
        FeedbackEntry { feedback: feedback(&batch_id, 1, FeedbackStatus::Error, 13, Some("x")), request: a, effect: FeedbackEffect::Reprint },
    ];
    let err = l.record_print_feedback(&moved, &op).await.unwrap_err();
    assert!(matches!(&err, LedgerError::LetterMoved { letter_number: 1, .. }), "{err}");
    assert_eq!(l.print_letters(&batch_id).await.unwrap()[1].feedback.len(), 1, "the line before it was rolled back");
    assert_eq!(state_of(&*l, a).await, Posted);
}

async fn concurrent_openings_of_one_nights_batch_make_one_batch((l, _): Ctx) {
    let ids = awaiting_print(&*l, 20, "c").await;
    let date = chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
    let mut tasks = Vec::new();
    for k in 0..4 {
        let (l, mut order) = (l.clone(), ids.clone());
        order.rotate_left(k * 3);
        tasks.push(tokio::spawn(async move { l.open_print_batch(date, "B20261202", &order).await.unwrap().unwrap() }));
    }
    let mut batches = Vec::new();
    for t in tasks {
        batches.push(t.await.unwrap());
    }
    assert_eq!(batches.iter().filter(|b| b.created).count(), 1, "one call made it");
    assert!(batches.iter().all(|b| b.letters == batches[0].letters), "every call got the same letters");
    assert_eq!(batches[0].letters.len(), 20);
}

async fn the_journal_refuses_delete((l, url): Ctx) {
    let id = record_new(&*l, new_request("t", "http:1", None)).await;
    let sql = "DELETE FROM request_events WHERE request_id = $1";
    let err = if url.starts_with("postgres") {
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::query(sql).bind(id.get()).execute(&mut conn).await.unwrap_err()
    } else {
        let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{path}")).await.unwrap();
        sqlx::query(sql).bind(id.get()).execute(&mut conn).await.unwrap_err()
    };
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_eq!(l.journal(id).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------
// Received messages (the receive stage)

fn new_received(message_id: &str, file_name: &str, payload: &[u8]) -> ledger::NewReceived {
    ledger::NewReceived {
        message_id: message_id.into(),
        tenant: "demo".into(),
        reader: "vbh:057660440000".into(),
        file_name: file_name.into(),
        payload: payload.to_vec(),
        reason: None,
    }
}

async fn a_received_message_is_stored_once_and_moves_by_compare_and_set((l, _): Ctx) {
    use ledger::{ReceivedState as R, StoredReceived};
    let id = "urn:de:xta:messageid:sim:0e0b3c1a-2d2b-4a0e-9f43-7d8f3c1b2a10";
    assert_eq!(l.received(id).await.unwrap(), None);
    assert_eq!(l.received_payload(id).await.unwrap(), None);
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let stored = l.store_received(new_received(id, "a.xml", b"<first/>")).await.unwrap();
    let StoredReceived::New(row) = stored else { panic!("{stored:?}") };
    assert_eq!((row.message_id.as_str(), row.tenant.as_str(), row.file_name.as_str(), row.state), (id, "demo", "a.xml", R::Stored));
    assert_eq!((row.reason.clone(), row.claimed_by.clone()), (None, None));
    assert!(row.received_at > before && row.received_at <= chrono::Utc::now());
    // Offered again (after a crash): the row that is there, unchanged, payload included.
    let again = l.store_received(new_received(id, "a.xml", b"<second/>")).await.unwrap();
    assert_eq!(again, StoredReceived::Before(row.clone()));
    assert_eq!(l.received_payload(id).await.unwrap().as_deref(), Some(&b"<first/>"[..]));
    // Another MessageID may not take the same file.
    let err = l.store_received(new_received("urn:de:xta:messageid:sim:other", "a.xml", b"<x/>")).await.unwrap_err();
    assert!(matches!(err, LedgerError::Database(_)), "{err}");
    assert_eq!(l.received("urn:de:xta:messageid:sim:other").await.unwrap(), None);

    // Compare-and-set: stored → written → closed, each once.
    let err = l.mark_received(id, R::Stored, R::Closed).await.unwrap_err();
    assert!(matches!(err, LedgerError::InvalidReceivedTransition { from: R::Stored, to: R::Closed }), "{err}");
    assert!(!l.mark_received(id, R::Written, R::Closed).await.unwrap(), "not written yet");
    assert!(l.mark_received(id, R::Stored, R::Written).await.unwrap());
    assert!(!l.mark_received(id, R::Stored, R::Written).await.unwrap(), "written once");
    assert!(!l.mark_received(id, R::Stored, R::Invalid).await.unwrap());
    assert_eq!(l.received(id).await.unwrap().unwrap().state, R::Written);
    assert!(l.mark_received(id, R::Written, R::Closed).await.unwrap());
    assert!(!l.mark_received(id, R::Written, R::Closed).await.unwrap());
    let closed = l.received(id).await.unwrap().unwrap();
    assert_eq!(closed.state, R::Closed);
    assert!(closed.updated_at >= row.updated_at);
    assert!(!l.mark_received("urn:de:xta:messageid:sim:unknown", R::Stored, R::Written).await.unwrap());

    // An invalid one keeps its reason.
    let mut bad = new_received("urn:de:xta:messageid:sim:bad", "b.xml", b"not xml");
    bad.reason = Some("not XML".into());
    l.store_received(bad).await.unwrap();
    assert!(l.mark_received("urn:de:xta:messageid:sim:bad", R::Stored, R::Invalid).await.unwrap());
    let bad = l.received("urn:de:xta:messageid:sim:bad").await.unwrap().unwrap();
    assert_eq!((bad.state, bad.reason.as_deref()), (R::Invalid, Some("not XML")));
    // Requests are another table: nothing was recorded there.
    assert_eq!(recorded(&*l).await, 0);
}

/// Two processes fetching the same message at once store it once.
async fn concurrent_stores_of_one_received_message_store_it_once((l, _): Ctx) {
    let id = "urn:de:xta:messageid:sim:7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11";
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let l = l.clone();
            tokio::spawn(async move { l.store_received(new_received(id, "m.xml", format!("<m>{n}</m>").as_bytes())).await.unwrap() })
        })
        .collect();
    let mut new = Vec::new();
    for t in tasks {
        if let ledger::StoredReceived::New(row) = t.await.unwrap() {
            new.push(row);
        }
    }
    assert_eq!(new.len(), 1, "one insert wins");
    let payload = l.received_payload(id).await.unwrap().unwrap();
    assert!(String::from_utf8(payload).unwrap().starts_with("<m>"));
}

async fn a_claim_to_write_a_received_message_excludes_others_until_it_expires((l, _): Ctx) {
    use ledger::ReceivedState as R;
    let id = "urn:de:xta:messageid:sim:claimed";
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    assert!(!l.claim_received(id, "a", later).await.unwrap(), "unknown message");
    l.store_received(new_received(id, "c.xml", b"<c/>")).await.unwrap();
    assert!(l.claim_received(id, "a", later).await.unwrap());
    assert!(!l.claim_received(id, "b", later).await.unwrap(), "a holds it");
    assert!(l.claim_received(id, "a", later).await.unwrap(), "a again: still a's");
    let row = l.received(id).await.unwrap().unwrap();
    assert_eq!(row.claimed_by.as_deref(), Some("a"));
    assert!(row.claimed_until.is_some_and(|t| (t - later).num_milliseconds().abs() < 2), "{row:?}");
    // a died: its claim runs out, and b takes it.
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    assert!(l.claim_received(id, "a", past).await.unwrap());
    assert!(l.claim_received(id, "b", later).await.unwrap(), "expired: b takes over");
    assert!(!l.claim_received(id, "a", later).await.unwrap());
    // Written: nothing left to claim, and the claim is let go.
    assert!(l.mark_received(id, R::Stored, R::Written).await.unwrap());
    let row = l.received(id).await.unwrap().unwrap();
    assert_eq!((row.claimed_by, row.claimed_until), (None, None));
    assert!(!l.claim_received(id, "b", later).await.unwrap());
}

// ---------------------------------------------------------------------------------------
// Backend-specific checks
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn postgres_journal_is_append_only() {
    with_postgres(|(l, url): Ctx| async move {
        let id = record_new(&*l, new_request("t", "http:1", None)).await;
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let err = sqlx::query("UPDATE request_events SET detail = 'x' WHERE request_id = $1")
            .bind(id.get())
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub-does-not-matter.db");
    let l = ledger::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    l.migrate().await.unwrap();
    record_new(&*l, new_request("t", "http:1", None)).await;
    assert!(path.exists());
    assert!(dir.path().join("sub-does-not-matter.db-wal").exists());
}

/// A SQLite ledger and a second connection to its file, for what the suite cannot do
/// through the trait.
async fn sqlite_with_connection() -> (tempfile::TempDir, Arc<dyn Ledger>, sqlx::SqliteConnection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let l = ledger::open(&format!("sqlite:{}", path.display())).await.unwrap();
    l.migrate().await.unwrap();
    let conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    (dir, l, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_record_that_fails_in_the_database_fails_alone() {
    // A trigger makes the database refuse one tenant's records: a real SQL error in the
    // middle of a group commit. The batch is rolled back and its records written one by
    // one, so only the refused record fails.
    let (_dir, l, mut conn) = sqlite_with_connection().await;
    sqlx::query(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON requests WHEN NEW.tenant = 'poison' \
         BEGIN SELECT RAISE(ABORT, 'poisoned tenant'); END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..120 {
        let l = l.clone();
        let tenant = if i % 40 == 7 { "poison" } else { "t" };
        tasks.push(tokio::spawn(async move {
            let r = new_request(tenant, &format!("http:{i}"), Some(&format!("u-{i}")));
            (tenant, l.record(r, Received, &intake(), None).await)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            ("t", Ok(Recorded::New(_))) => ok += 1,
            ("poison", Err(LedgerError::Database(e))) => {
                assert!(e.to_string().contains("poisoned tenant"), "{e}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, refused), (117, 3));
    assert_eq!(recorded(&*l).await, 117);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_callers_that_give_up_do_not_take_the_others_records_with_them() {
    // Half the callers are dropped while they wait (an HTTP client that went away), some
    // of them while their task is writing a batch that holds other callers' records.
    // Everyone who waited gets an answer and finds the record in the ledger.
    let (_dir, l, _conn) = sqlite_with_connection().await;
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for i in 0..200 {
        let l = l.clone();
        let task = tokio::spawn(async move {
            let r = new_request("t", &format!("http:{i}"), Some(&format!("u-{i}")));
            l.record(r, Received, &intake(), None).await
        });
        if i % 2 == 0 { kept.push(task) } else { dropped.push(task) }
    }
    tokio::task::yield_now().await;
    for task in &dropped {
        task.abort();
    }
    for task in kept {
        let outcome = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("an answer, not a hang")
            .unwrap();
        let Ok(Recorded::New(id)) = outcome else {
            panic!("unexpected {outcome:?}")
        };
        assert_eq!(l.journal(id).await.unwrap().len(), 1);
    }
    let recorded = recorded(&*l).await;
    assert!((100..=200).contains(&recorded), "{recorded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_database_locked_by_another_process_fails_the_batch_at_once() {
    // Another process holds the write lock longer than our busy timeout (200 ms here).
    // Every waiting record gets "database is locked" after one busy wait per batch, not
    // one per record (100 records one by one would take 20 s), and nothing is recorded.
    // When the lock is gone, recording works again.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let options = ledger::SqliteLedgerOptions { busy_timeout: Duration::from_millis(200), ..Default::default() };
    let l: Arc<dyn Ledger> = Arc::new(ledger::SqliteLedger::open_with(&path, &options).await.unwrap());
    l.migrate().await.unwrap();
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display())).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();

    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let l = l.clone();
            tokio::spawn(async move { l.record(new_request("t", &format!("http:{i}"), Some(&format!("u-{i}"))), Received, &intake(), None).await })
        })
        .collect();
    let all_answered = async {
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        outcomes
    };
    let outcomes = tokio::time::timeout(Duration::from_secs(10), all_answered).await.expect("every caller answered while the lock is held");
    for outcome in &outcomes {
        match outcome {
            Err(LedgerError::Database(e)) => assert!(e.to_string().contains("locked"), "{e}"),
            other => panic!("expected 'database is locked', got {other:?}"),
        }
    }
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(recorded(&*l).await, 0);
    record_new(&*l, new_request("t", "http:after", Some("u-after"))).await;
}

#[test]
fn database_names_in_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@h/test?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}

// ---------------------------------------------------------------------------------------
// Notifications (ledger::mail)
// ---------------------------------------------------------------------------------------

/// A request recorded and moved to `rejected` (an event worth an email): its notification id.
async fn rejected_request(l: &dyn Ledger, source: &str) -> (RequestId, String) {
    let id = record_new(l, new_request("demo", source, None)).await;
    l.transition(id, Received, Validated, &intake(), None).await.unwrap();
    l.transition(id, Validated, Rejected, &Actor::system("route"), Some("no claim to route by")).await.unwrap();
    (id, format!("r{}-3-rejected", id.0))
}

fn mail_for(notification: &str, domain: &str) -> ledger::NewMail {
    ledger::NewMail {
        id: notification.to_owned(),
        tenant: "demo".into(),
        recipients: vec![format!("kasse@{domain}")],
        domain: domain.into(),
        digest: false,
        notifications: vec![notification.to_owned()],
    }
}

async fn notifications_are_written_with_the_journal_events_worth_an_email((l, _): Ctx) {
    let (id, expected) = rejected_request(&*l, "inbox:demo:n1").await;
    // received and validated are no news for the requester: only the rejection is.
    let notifications = l.notifications_of_request(id).await.unwrap();
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    let n = &notifications[0];
    assert_eq!((n.id.as_str(), n.event, n.seq, n.tenant.as_str()), (expected.as_str(), ledger::NotifyEvent::Rejected, Some(3), "demo"));
    assert_eq!(n.at, l.journal(id).await.unwrap()[2].at, "the event's own time");
    assert_eq!(l.open_notifications(10).await.unwrap().len(), 1);
    assert_eq!(l.open_notification_count().await.unwrap(), 1);

    // Composed once: a second composition of the same notification changes nothing.
    l.compose_mails(&[mail_for(&expected, "lemgo.example")], &[]).await.unwrap();
    l.compose_mails(&[mail_for(&expected, "other.example")], &[]).await.unwrap();
    assert_eq!(l.open_notification_count().await.unwrap(), 0);
    let mail = l.mail(&expected).await.unwrap().unwrap();
    assert_eq!((mail.status, mail.domain.as_str()), (ledger::MailStatus::Pending, "lemgo.example"));
    assert_eq!(l.notifications_of_mail(&expected).await.unwrap().len(), 1);

    // A notification that gets no email says why.
    let (other, other_n) = rejected_request(&*l, "inbox:demo:n2").await;
    l.compose_mails(&[], &[(other_n.clone(), "no address".into())]).await.unwrap();
    assert_eq!(l.notifications_of_request(other).await.unwrap()[0].skipped.as_deref(), Some("no address"));
    assert!(l.open_notifications(10).await.unwrap().is_empty());
}

async fn an_email_is_claimed_by_one_sender_and_its_outcome_recorded((l, _): Ctx) {
    use ledger::{MailMark, MailStatus};
    let (_, n) = rejected_request(&*l, "inbox:demo:c1").await;
    l.compose_mails(&[mail_for(&n, "lemgo.example")], &[]).await.unwrap();
    let until = chrono::Utc::now() + chrono::Duration::minutes(5);
    let a = l.claim_mails("notify-a-1", until, 10).await.unwrap();
    assert_eq!(a.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [n.as_str()]);
    assert_eq!(a[0].status, MailStatus::Claimed);
    assert!(l.claim_mails("notify-b-2", until, 10).await.unwrap().is_empty(), "claimed by one sender only");
    // Another sender's notes change nothing.
    l.mark_mails("notify-b-2", vec![MailMark::HandOver { id: n.clone() }]).await.unwrap();
    assert_eq!(l.mail(&n).await.unwrap().unwrap().status, MailStatus::Claimed);
    l.mark_mails("notify-a-1", vec![MailMark::HandOver { id: n.clone() }]).await.unwrap();
    assert_eq!(l.mail(&n).await.unwrap().unwrap().status, MailStatus::Sending);
    l.mark_mails("notify-a-1", vec![MailMark::Accepted { id: n.clone() }]).await.unwrap();
    let mail = l.mail(&n).await.unwrap().unwrap();
    assert_eq!((mail.status, mail.claimed_by.as_deref()), (MailStatus::Accepted, None));
    assert!(mail.accepted_at.is_some());
    assert!(l.claim_mails("notify-a-1", until, 10).await.unwrap().is_empty(), "an accepted email is never claimed again");
    assert!(!l.retry_mail(&n).await.unwrap(), "nor retried");
    assert!(!l.discard_mail(&n).await.unwrap(), "nor discarded");
    let counts = l.mail_counts().await.unwrap();
    assert_eq!(counts.iter().find(|(s, _)| *s == MailStatus::Accepted).map(|(_, n)| *n), Some(1));
}

async fn a_deferred_email_makes_its_domain_wait_and_the_others_go_on((l, _): Ctx) {
    use ledger::{MailMark, MailStatus};
    let (_, x1) = rejected_request(&*l, "inbox:demo:d1").await;
    let (_, x2) = rejected_request(&*l, "inbox:demo:d2").await;
    let (_, y1) = rejected_request(&*l, "inbox:demo:d3").await;
    l.compose_mails(&[mail_for(&x1, "down.example"), mail_for(&x2, "down.example"), mail_for(&y1, "up.example")], &[]).await.unwrap();
    let until = chrono::Utc::now() + chrono::Duration::minutes(5);
    let first = l.claim_mails("notify-a-1", until, 1).await.unwrap();
    assert_eq!(first[0].id, x1, "oldest first");
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    l.mark_mails("notify-a-1", vec![MailMark::Deferred { id: x1.clone(), error: "451 4.3.0 try later".into(), next_at: later }]).await.unwrap();
    let x1_row = l.mail(&x1).await.unwrap().unwrap();
    assert_eq!((x1_row.status, x1_row.attempts, x1_row.last_error.as_deref()), (MailStatus::Deferred, 1, Some("451 4.3.0 try later")));
    // down.example waits; up.example goes on.
    let next = l.claim_mails("notify-a-1", until, 10).await.unwrap();
    assert_eq!(next.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [y1.as_str()]);
    l.mark_mails("notify-a-1", vec![MailMark::Released { id: y1.clone() }]).await.unwrap();
    assert_eq!(l.mail(&y1).await.unwrap().unwrap().status, MailStatus::Pending, "released, not tried: pending");
    // An operator's retry lifts the domain's wait.
    assert!(l.retry_mail(&x1).await.unwrap());
    let all = l.claim_mails("notify-a-1", until, 10).await.unwrap();
    let mut ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
    ids.sort();
    let mut expected = vec![x1.as_str(), x2.as_str(), y1.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    l.mark_mails("notify-a-1", vec![MailMark::Failed { id: x2.clone(), error: "550 5.1.1 no such user".into() }]).await.unwrap();
    let failed = l.mails(true, 10).await.unwrap();
    assert_eq!(failed.iter().map(|m| (m.id.as_str(), m.status)).collect::<Vec<_>>(), [(x2.as_str(), MailStatus::Failed)]);
}

async fn a_dead_senders_emails_are_let_go_claimed_again_sending_unconfirmed((l, _): Ctx) {
    use ledger::{MailMark, MailStatus};
    let (_, a) = rejected_request(&*l, "inbox:demo:g1").await;
    let (_, b) = rejected_request(&*l, "inbox:demo:g2").await;
    l.compose_mails(&[mail_for(&a, "lemgo.example"), mail_for(&b, "lemgo.example")], &[]).await.unwrap();
    let until = chrono::Utc::now() + chrono::Duration::minutes(5);
    assert_eq!(l.claim_mails("notify-dead-7", until, 10).await.unwrap().len(), 2);
    l.mark_mails("notify-dead-7", vec![MailMark::HandOver { id: b.clone() }]).await.unwrap();
    assert_eq!(l.mails_in_hand().await.unwrap().len(), 2);
    assert!(!l.let_go_of_mail(&a, "notify-other-8").await.unwrap(), "only the holder's claim is let go");
    assert!(l.let_go_of_mail(&a, "notify-dead-7").await.unwrap());
    assert!(l.let_go_of_mail(&b, "notify-dead-7").await.unwrap());
    assert_eq!(l.mail(&a).await.unwrap().unwrap().status, MailStatus::Pending, "claimed, never handed over: sent again");
    let unconfirmed = l.mail(&b).await.unwrap().unwrap();
    assert_eq!(unconfirmed.status, MailStatus::Unconfirmed, "its content may have reached the server: not sent again by itself");
    assert!(unconfirmed.last_error.as_deref().is_some_and(|e| e.contains("not sent again")));
    let again = l.claim_mails("notify-new-9", until, 10).await.unwrap();
    assert_eq!(again.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [a.as_str()]);
    assert_eq!(l.mails(true, 10).await.unwrap().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [b.as_str()], "an operator sees it");
    assert!(l.discard_mail(&b).await.unwrap());
    assert_eq!(l.mail(&b).await.unwrap().unwrap().status, MailStatus::Discarded);
}
