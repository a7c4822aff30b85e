//! The store contract, run against both stores: what the pipeline, delivery and admin code rely
//! on, whichever database is behind the trait. PostgreSQL cases run on a fresh database each
//! (`postgres::testdb`) and say "skipped" where no server answers, unless
//! `LEADGATE_REQUIRE_POSTGRES=1`. Several `PgStore`s on one database stand in for replicas.

use std::sync::Arc;
use std::time::Duration;

use super::outbox::now_ms;
use super::postgres::testdb::TestDb;
use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::*;
use crate::config::RateLimit;
use crate::lead::Email;
use crate::outbox::CrmUpdate;

/// A store under test, plus what keeps it alive.
struct Subject {
    store: Arc<dyn Store>,
    /// Another handle on the same data (a second replica for PostgreSQL; the same store for
    /// SQLite, which serves one process).
    replica: Arc<dyn Store>,
    shared: bool,
    _keep: Box<dyn std::any::Any + Send>,
}

fn sqlite() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("l.db")).unwrap());
    Subject {
        replica: Arc::clone(&store),
        store,
        shared: false,
        _keep: Box::new(dir),
    }
}

async fn postgres(test: &str) -> Option<Subject> {
    let db = TestDb::create(test)?;
    let store: Arc<dyn Store> = Arc::new(PgStore::open(&db.url).await.unwrap());
    let replica: Arc<dyn Store> = Arc::new(PgStore::open(&db.url).await.unwrap());
    Some(Subject {
        store,
        replica,
        shared: true,
        _keep: Box::new(db),
    })
}

/// Runs one contract case on SQLite and on PostgreSQL.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::sqlite()).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = super::postgres(stringify!($name)).await {
                        super::$name(s).await;
                    }
                }
            )*
        }
    };
}

contract!(
    a_late_input_gets_the_leads_input_log_and_an_in_order_one_does_not,
    a_repeated_event_is_stored_once_even_when_sent_concurrently,
    an_event_is_processed_once_whoever_processes_it,
    one_leads_updates_are_serialised_across_workers,
    a_superseded_term_can_neither_claim_nor_record_nor_spend,
    the_outbox_coalesces_and_delivers_the_newest_version,
    dead_letters_are_requeued_once,
    replay_and_queries_read_the_same_on_both_stores,
);

/// A stored Typeform delivery with dedupe key `key`.
pub(crate) fn event(key: &str) -> NewEvent {
    NewEvent {
        source: "typeform".into(),
        dedupe_key: key.into(),
        received_at_ms: 1_700_000_000_000,
        content_type: "application/json".into(),
        body: bytes::Bytes::from_static(br#"{"event_id":"e"}"#),
        payload: None,
    }
}

fn update(email: &str, version: i64) -> CrmUpdate {
    CrmUpdate {
        version,
        ..crate::deliver::crm::test_support::update(email, "lead", 2)
    }
}

/// A lead step that counts how often it ran on top of the stored state (a lost update would
/// show as a count below the number of events). Its input happened at `occurred_at_ms`; it
/// records whether the store handed it the input log (a late input).
fn step_at(
    email: &str,
    event: EventId,
    occurred_at_ms: i64,
    saw_log: Arc<std::sync::Mutex<Option<Vec<EventId>>>>,
) -> LeadStep {
    let apply: LeadFn = Box::new(
        move |prev: Option<&LeadRecord>, version: i64, log: Option<Vec<LeadInput>>| {
            *saw_log.lock().unwrap() = log.map(|l| {
                let mut ids: Vec<EventId> = l.iter().map(|i| i.event).collect();
                ids.sort();
                ids
            });
            let n = prev.map(|p| p.score).unwrap_or(0) + 1;
            Ok(Some(LeadChange {
                state: format!("{{\"n\":{n}}}"),
                stage: "lead".into(),
                stage_rank: 2,
                reached_rank: 2,
                score: n,
                source: Some("typeform".into()),
                campaign: None,
                update: Some(update("pat@acme-corp.io", version)),
                input_clock_ms: None,
            }))
        },
    );
    LeadStep {
        email: Email::parse(email).unwrap(),
        input: LeadInput {
            event,
            occurred_at_ms,
            folded_at_ms: 7,
            items: Some("{}".into()),
        },
        apply,
    }
}

/// The delivery lease for `hubspot`, held by the first store.
async fn hold_lease(s: &Subject) -> Fence {
    s.store
        .acquire_lease("hubspot", "a", Duration::from_secs(15))
        .await
        .unwrap()
        .expect("a free lease is granted")
}

fn count_up(email: &str, event: EventId) -> LeadStep {
    step_at(email, event, 1_700_000_000_000, Default::default())
}

async fn a_repeated_event_is_stored_once_even_when_sent_concurrently(s: Subject) {
    let mut tasks = Vec::new();
    for i in 0..200 {
        // Every key twice, half of them through the other replica.
        let st = if i % 2 == 0 {
            Arc::clone(&s.store)
        } else {
            Arc::clone(&s.replica)
        };
        tasks.push(tokio::spawn(async move {
            st.insert_event(event(&format!("k{}", i / 2))).await
        }));
    }
    let mut new = 0;
    let mut ids = std::collections::HashMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap().unwrap();
        if let Inserted::New(_) = r {
            new += 1;
        }
        // Both answers for one key name the same stored row.
        if let Some(other) = ids.insert(i / 2, r.id()) {
            assert_eq!(other, r.id());
        }
    }
    assert_eq!(new, 100);
    assert_eq!(
        s.store.count_events(EventStatus::Received).await.unwrap(),
        100
    );
    let first = s.store.insert_event(event("k0")).await.unwrap();
    assert_eq!(first, Inserted::Duplicate(ids[&0]));
    // The same key twice through one store at once (one group insert on PostgreSQL): one new.
    let burst: Vec<_> = (0..60)
        .map(|i| {
            let st = Arc::clone(&s.store);
            tokio::spawn(async move { st.insert_event(event(&format!("d{}", i / 2))).await })
        })
        .collect();
    let mut fresh = 0;
    for t in burst {
        if let Inserted::New(_) = t.await.unwrap().unwrap() {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 30);
    assert_eq!(
        s.store.count_events(EventStatus::Received).await.unwrap(),
        130
    );
    let stored = s.replica.event(first.id()).await.unwrap().unwrap();
    assert_eq!(&stored.body[..], br#"{"event_id":"e"}"#);
}

async fn an_event_is_processed_once_whoever_processes_it(s: Subject) {
    let id = s.store.insert_event(event("a")).await.unwrap().id();
    let pending = s.replica.pending_events(None, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    let (a, b) = (Arc::clone(&s.store), Arc::clone(&s.replica));
    let one = tokio::spawn(async move {
        a.process_event(id, Processed::Leads(vec![count_up("pat@acme-corp.io", id)]))
            .await
    });
    let two = tokio::spawn(async move {
        b.process_event(id, Processed::Leads(vec![count_up("pat@acme-corp.io", id)]))
            .await
    });
    let (one, two) = (one.await.unwrap().unwrap(), two.await.unwrap().unwrap());
    assert!(one ^ two, "exactly one worker applied it ({one}, {two})");
    // Later attempts see it done.
    let again = s
        .store
        .process_event(id, Processed::Leads(vec![count_up("pat@acme-corp.io", id)]))
        .await
        .unwrap();
    assert!(!again);
    let (lead, events) = s.store.lead("pat@acme-corp.io").await.unwrap().unwrap();
    assert_eq!((lead.score, lead.version, events), (1, 1, vec![id]));
    assert_eq!(
        s.store.count_events(EventStatus::Processed).await.unwrap(),
        1
    );
    assert!(s.store.pending_events(None, 10).await.unwrap().is_empty());
}

async fn one_leads_updates_are_serialised_across_workers(s: Subject) {
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            s.store
                .insert_event(event(&format!("e{i}")))
                .await
                .unwrap()
                .id(),
        );
    }
    let tasks: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let st = if i % 2 == 0 {
                Arc::clone(&s.store)
            } else {
                Arc::clone(&s.replica)
            };
            let id = *id;
            tokio::spawn(async move {
                // Two leads per event, named in both orders: the store locks them in one order.
                let mut leads = vec![
                    count_up("pat@acme-corp.io", id),
                    count_up("sam@acme-corp.io", id),
                ];
                if i % 3 == 0 {
                    leads.reverse();
                }
                st.process_event(id, Processed::Leads(leads)).await
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap());
    }
    for email in ["pat@acme-corp.io", "sam@acme-corp.io"] {
        let (lead, events) = s.replica.lead(email).await.unwrap().unwrap();
        assert_eq!(lead.score, 40, "{email}: no update was lost");
        assert_eq!(lead.version, 40);
        assert_eq!(events.len(), 40);
    }
}

async fn a_superseded_term_can_neither_claim_nor_record_nor_spend(s: Subject) {
    let quota = RateLimit {
        requests: std::num::NonZeroU32::new(100).unwrap(),
        per: Duration::from_secs(10),
    };
    let old = s
        .store
        .acquire_lease("hubspot", "a", Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.store.take_token(&old, &quota).await.unwrap(),
        Token::Granted
    );
    s.store
        .enqueue_update(update("pat@acme-corp.io", 1))
        .await
        .unwrap();
    assert_eq!(
        s.store.claim_due(&old, 10, now_ms()).await.unwrap().len(),
        1
    );
    if s.shared {
        // While its lease runs, nobody else is elected, and a renewal keeps the term.
        let other = s
            .replica
            .acquire_lease("hubspot", "b", Duration::from_secs(15))
            .await
            .unwrap();
        assert_eq!(other, None);
        let renewed = s
            .store
            .acquire_lease("hubspot", "a", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(renewed.as_ref().map(|f| f.term), Some(old.term));
        tokio::time::sleep(Duration::from_millis(2300)).await;
    }
    let new = s
        .replica
        .acquire_lease("hubspot", "b", Duration::from_secs(15))
        .await
        .unwrap()
        .expect("the lapsed lease is taken over");
    assert!(new.term > old.term);
    // What the old term left in flight is claimable at once under the new one.
    let claimed = s.replica.claim_due(&new, 10, now_ms()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let done = RecordResult {
        email: Email::parse("pat@acme-corp.io").unwrap(),
        version: 1,
        outcome: Outcome::Delivered {
            stage_rank: Some(2),
            crm_ref: None,
        },
    };
    assert!(matches!(
        s.store
            .record_results(&old, vec![done.clone()], now_ms())
            .await,
        Err(StoreError::Fenced(_))
    ));
    assert!(matches!(
        s.store.claim_due(&old, 10, now_ms()).await,
        Err(StoreError::Fenced(_))
    ));
    if s.shared {
        assert!(matches!(
            s.store.take_token(&old, &quota).await,
            Err(StoreError::Fenced(_))
        ));
    }
    let r = s
        .replica
        .record_results(&new, vec![done], now_ms())
        .await
        .unwrap();
    assert_eq!(r.delivered, 1);
    assert_eq!(s.store.outbox_depth().await.unwrap().pending, 0);
    // Resigning lets the next holder in at once, with a higher term still.
    s.replica.release_lease(&new).await.unwrap();
    let third = s
        .store
        .acquire_lease("hubspot", "c", Duration::from_secs(15))
        .await
        .unwrap()
        .expect("a released lease is free");
    assert!(third.term > new.term);
}

async fn the_outbox_coalesces_and_delivers_the_newest_version(s: Subject) {
    let fence = hold_lease(&s).await;
    s.store.enqueue_update(update("a@x.io", 2)).await.unwrap();
    s.replica.enqueue_update(update("a@x.io", 1)).await.unwrap();
    let got = s.store.claim_due(&fence, 10, now_ms()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].update.version, 2);
    // A newer version arriving in flight is sent after the in-flight one succeeds.
    s.replica.enqueue_update(update("a@x.io", 3)).await.unwrap();
    let ok = |v| RecordResult {
        email: Email::parse("a@x.io").unwrap(),
        version: v,
        outcome: Outcome::Delivered {
            stage_rank: Some(2),
            crm_ref: Some(serde_json::json!({"id": 7})),
        },
    };
    let r = s
        .store
        .record_results(&fence, vec![ok(2)], now_ms())
        .await
        .unwrap();
    assert_eq!(r.delivered, 1);
    let next = s.store.claim_due(&fence, 10, now_ms()).await.unwrap();
    assert_eq!(next[0].update.version, 3);
    assert_eq!(next[0].delivered_rank, Some(2));
    assert_eq!(next[0].crm_ref, Some(serde_json::json!({"id": 7})));
    s.store
        .record_results(&fence, vec![ok(3)], now_ms())
        .await
        .unwrap();
    let d = s.replica.lead_delivery("a@x.io").await.unwrap();
    assert_eq!(d.delivered.map(|(v, _)| v), Some(3));
    assert_eq!(d.pending, None);
    // A version the CRM has is never queued again.
    s.store.enqueue_update(update("a@x.io", 3)).await.unwrap();
    assert_eq!(s.store.outbox_depth().await.unwrap().pending, 0);
}

async fn dead_letters_are_requeued_once(s: Subject) {
    let fence = hold_lease(&s).await;
    s.store.enqueue_update(update("a@x.io", 1)).await.unwrap();
    s.store.claim_due(&fence, 1, now_ms()).await.unwrap();
    let dead = RecordResult {
        email: Email::parse("a@x.io").unwrap(),
        version: 1,
        outcome: Outcome::Dead {
            crm: "hubspot".into(),
            error: "Property \"x\" does not exist".into(),
        },
    };
    assert_eq!(
        s.store
            .record_results(&fence, vec![dead], now_ms())
            .await
            .unwrap()
            .dead,
        1
    );
    let letters = s.replica.dead_letters(None).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].message.contains("does not exist"));
    let id = letters[0].id;
    let (a, b) = (Arc::clone(&s.store), Arc::clone(&s.replica));
    let (ra, rb) = tokio::join!(
        a.requeue_dead_letters(Some(vec![id])),
        b.requeue_dead_letters(Some(vec![id, 999]))
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.requeued + rb.requeued, 1, "{ra:?} {rb:?}");
    let d = s.store.outbox_depth().await.unwrap();
    assert_eq!((d.pending, d.dead_letters), (1, 0));
}

async fn replay_and_queries_read_the_same_on_both_stores(s: Subject) {
    let a = s.store.insert_event(event("a")).await.unwrap().id();
    let b = s.store.insert_event(event("b")).await.unwrap().id();
    s.store
        .process_event(a, Processed::Unmappable("no mapping".into()))
        .await
        .unwrap();
    s.store
        .process_event(b, Processed::Leads(vec![count_up("pat@acme-corp.io", b)]))
        .await
        .unwrap();
    let recent = s
        .replica
        .recent_events(Some(EventStatus::Unmappable), 10)
        .await
        .unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].status_reason.as_deref(), Some("no mapping"));
    let funnel = s.replica.funnel().await.unwrap();
    assert_eq!(funnel.len(), 1);
    assert_eq!((funnel[0].stage.as_str(), funnel[0].leads), ("lead", 1));
    let at = s
        .replica
        .leads_at(vec!["lead".into()], None, 10)
        .await
        .unwrap();
    assert_eq!(at.len(), 1);
    let filter = ReplayFilter {
        source: Some("typeform".into()),
        since_ms: None,
        include_processed: false,
    };
    assert_eq!(s.replica.replay_events(filter.clone()).await.unwrap(), 1);
    let all = ReplayFilter {
        include_processed: true,
        ..filter
    };
    // `a` is waiting again already; only `b` goes back.
    assert_eq!(s.replica.replay_events(all).await.unwrap(), 1);
    assert_eq!(s.store.pending_events(None, 10).await.unwrap().len(), 2);
    s.store.check_writable().await.unwrap();
}

async fn a_late_input_gets_the_leads_input_log_and_an_in_order_one_does_not(s: Subject) {
    let mut ids = Vec::new();
    for key in ["a", "b", "c", "d"] {
        ids.push(s.store.insert_event(event(key)).await.unwrap().id());
    }
    let apply = |id: EventId, at: i64| {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let st = Arc::clone(&s.store);
        let step = step_at("pat@acme-corp.io", id, at, Arc::clone(&seen));
        async move {
            assert!(st
                .process_event(id, Processed::Leads(vec![step]))
                .await
                .unwrap());
            let got = seen.lock().unwrap().clone();
            got
        }
    };
    // In provider-time order: no log needed.
    assert_eq!(apply(ids[1], 2_000).await, None);
    assert_eq!(apply(ids[2], 3_000).await, None);
    // Happened before what is applied (stored later, or committed late): the lead's whole log.
    assert_eq!(apply(ids[0], 1_000).await, Some(vec![ids[1], ids[2]]));
    // Its own event processed again (a replay): late too, its earlier input in the log.
    s.store
        .replay_events(ReplayFilter {
            source: None,
            since_ms: None,
            include_processed: true,
        })
        .await
        .unwrap();
    assert_eq!(
        apply(ids[2], 3_000).await,
        Some(vec![ids[0], ids[1], ids[2]])
    );
    // Same time as the newest, higher id: in order.
    assert_eq!(apply(ids[3], 3_000).await, None);
    let (lead, events) = s.replica.lead("pat@acme-corp.io").await.unwrap().unwrap();
    assert_eq!((lead.score, events.len()), (5, 4));
}
