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
    let hub = SyncHub::start(state.clone(), &HubConfig::default());
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
