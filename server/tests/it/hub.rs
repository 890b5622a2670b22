//! The hub's promises to slow peers, over a real store: a peer whose outbound queue is
//! full is disconnected for certain (never left open with a frame silently dropped).

use std::time::Duration;

use kepu_server::app_state::AppState;
use kepu_server::sync::hub::{HubConfig, Outbound, SyncHub};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::ids::{DeviceId, UserId};
use kepu_sync_core::wire::{Message, PROTOCOL_V1, PeerMetadata};
use kepu_sync_core::writer::{Role, Writer};
use tokio::sync::mpsc;

use crate::support::{Db, TestDb};

fn bureau_device() -> Writer {
    Writer {
        device: DeviceId(uuid::Uuid::from_u128(7)),
        user: UserId(uuid::Uuid::from_u128(8)),
        role: Role::BureauAdmin,
        school: None,
        venue: None,
        pupil: None,
    }
}

#[tokio::test]
async fn a_peer_whose_queue_is_full_is_disconnected_for_certain() {
    let db = TestDb::new(Db::Sqlite).await;
    let state = AppState::new(db.store.clone());
    let hub = SyncHub::start(&state, &HubConfig::default());
    // A peer that reads nothing: its queue holds two frames.
    let (out, mut queue) = mpsc::channel::<Outbound>(2);
    let conn = hub.connect(bureau_device(), out);
    let join = Message::Join {
        sender_id: "slow-peer".into(),
        peer_metadata: Some(PeerMetadata {
            storage_id: Some("slow-storage".into()),
            is_ephemeral: Some(false),
        }),
        supported_protocol_versions: vec![PROTOCOL_V1.to_owned()],
    };
    hub.frame(conn, join.encode()).await;
    // Each request for a document the server does not have is answered: more answers
    // than the queue holds.
    for n in 0..20u8 {
        let request = Message::Request {
            sender_id: "slow-peer".into(),
            target_id: "server".into(),
            document_id: DocumentId::from_bytes([n + 1; 16]),
            data: vec![0x42, 0, 0, 0, 0],
        };
        hub.frame(conn, request.encode()).await;
    }
    hub.flush().await;
    // What fitted is delivered, then the queue ends: the session closes.
    let mut delivered = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), queue.recv()).await {
            Ok(Some(Outbound::Frame(_))) => delivered += 1,
            Ok(Some(Outbound::Close(_)) | None) => break,
            Err(_) => panic!("the slow peer was left connected after its queue overflowed"),
        }
    }
    assert!(
        (2..21).contains(&delivered),
        "what fitted in the queue went out, not the 21 answers: {delivered}"
    );
    assert_eq!(state.metrics.slow_peers_closed_total.get(), 1);
    db.finish().await;
}

crate::support::on_both_databases!(
    multi_thread db: a_burst_of_scans_reaches_the_records_computed_at_most_twice_a_booking,
    connections_opening_and_leaving_are_the_devices_last_sync_times,
);

/// A device's connection opening and leaving are its last sync times (written many at a
/// time, ADR 0186); the live dashboard sees it connected at once and gone once the time
/// it left is written.
async fn connections_opening_and_leaving_are_the_devices_last_sync_times(db: &TestDb) {
    use kepu_server::clock::now_ms;

    const DEVICES: usize = 40;
    let state = AppState::new(db.store.clone());
    let hub = SyncHub::start(&state, &HubConfig::default());
    let (admin, devices) = crate::support::admin_with_devices(&db.store, DEVICES).await;
    let synced_since = |since: i64| {
        let store = db.store.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let times: Vec<Option<i64>> = store
                    .list_devices(Some(admin))
                    .await
                    .unwrap()
                    .iter()
                    .map(|d| d.last_sync_at)
                    .collect();
                let done = times
                    .iter()
                    .filter(|t| t.is_some_and(|t| t >= since))
                    .count();
                if done == DEVICES || std::time::Instant::now() > deadline {
                    return done;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let opened = now_ms();
    let mut conns = Vec::new();
    let mut queues = Vec::new();
    for d in &devices {
        let (out, queue) = mpsc::channel::<Outbound>(16);
        let writer = Writer {
            device: DeviceId(*d),
            user: UserId(admin),
            ..bureau_device()
        };
        conns.push(hub.connect(writer, out));
        queues.push(queue);
    }
    hub.flush().await;
    assert!(
        devices.iter().all(|d| state.live.is_connected(*d)),
        "the dashboard sees every device connected at once"
    );
    assert_eq!(
        synced_since(opened).await,
        DEVICES,
        "every connection's time is written"
    );

    let left = now_ms();
    for c in conns {
        hub.disconnect(c);
    }
    assert_eq!(
        synced_since(left).await,
        DEVICES,
        "every leaving time is written"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while devices.iter().any(|d| state.live.is_connected(*d))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        devices.iter().all(|d| !state.live.is_connected(*d)),
        "the dashboard sees every device gone"
    );
    drop(queues);
}

/// The records of a booking are computed from the whole document, so they are computed
/// for a burst of merges, not for each merged change (the hub waits for its queue to
/// empty; the engine writes the changes that arrive while a write is in flight
/// together), and every scan still reaches them.
async fn a_burst_of_scans_reaches_the_records_computed_at_most_twice_a_booking(db: &TestDb) {
    use kepu_sync_core::edits::Edit;
    use kepu_sync_core::ids::{PupilId, SchoolId, SlotId, VenueId};
    use kepu_sync_core::schema::booking::ScanMethod;

    let state = AppState::new(db.store.clone());
    let config = HubConfig {
        // Computed when the hub's queue is empty, never by the clock, so that a slow
        // machine cannot turn the burst into single merges.
        projection_delay: Duration::from_secs(3_600),
        ..HubConfig::default()
    };
    let hub = SyncHub::start(&state, &config);
    let p = crate::support::place(&db.store).await;
    let (venue, school) = (VenueId(p.venue), SchoolId(p.school));
    let slot = SlotId(uuid::Uuid::from_u128(77));
    let pupils: Vec<PupilId> = (1..=5).map(|n| PupilId(uuid::Uuid::from_u128(n))).collect();
    let bookings: Vec<DocumentId> = (1..=6u8).map(|n| DocumentId::from_bytes([n; 16])).collect();
    let records = |want: i64| {
        let (store, hub, bookings) = (db.store.clone(), hub.clone(), bookings.clone());
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let mut arrived = Vec::new();
            while std::time::Instant::now() < deadline {
                hub.flush().await;
                arrived.clear();
                for b in &bookings {
                    let a = store.booking_attendance(&b.to_string()).await.unwrap();
                    arrived.push(a.map(|a| a.booking.arrived));
                }
                if arrived.iter().all(|a| *a == Some(want)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            arrived
        }
    };
    let computed = || {
        ["memory", "store"]
            .iter()
            .map(|s| {
                state
                    .metrics
                    .projections_total
                    .with_label_values(&[s])
                    .get()
            })
            .sum::<u64>()
    };
    for b in &bookings {
        hub.edit(
            *b,
            Edit::CreateBooking {
                venue,
                slot,
                school,
                party_size: 5,
                roster: pupils.clone(),
            },
        );
    }
    assert_eq!(records(0).await, vec![Some(0); bookings.len()]);
    let before = computed();
    // Thirty scans in a burst, each its own merge and its own stored change.
    for b in &bookings {
        for (i, pupil) in pupils.iter().enumerate() {
            hub.edit(
                *b,
                Edit::CheckIn {
                    pupil: *pupil,
                    scan_id: format!("s-{i}"),
                    method: ScanMethod::Manual,
                    proof: None,
                },
            );
        }
    }
    assert_eq!(
        records(5).await,
        vec![Some(5); bookings.len()],
        "every booking's records hold its five scans"
    );
    let during = computed() - before;
    assert!(
        (1..=12).contains(&during),
        "30 merges of 6 bookings: records computed {during} times, at most twice a booking"
    );
}
