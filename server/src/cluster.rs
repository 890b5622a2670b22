//! Several server nodes on one PostgreSQL database (ADR 0120).
//!
//! - **Notifications.** A node that stores changes of documents sends `NOTIFY` on
//!   [`CHANNEL`] in the same transaction (delivered on commit): `doc` with their ids. After
//!   writing a document's records it sends `venue` (the live dashboard of that venue
//!   changed) and, when it does not lead, `slot` (the leader decides that slot). Every
//!   node listens ([`listen`]) and ignores its own notifications: a document it holds in
//!   memory reads the new change rows and syncs them to its devices; a venue's dashboards
//!   read their snapshot again; the leader decides the slot.
//! - **Leadership.** Work that must happen once (capacity decisions, creating the
//!   server's fixed-id documents, the revocation relay) runs on the node holding a
//!   session advisory lock on a connection of its own ([`lead`]). When that node dies,
//!   its connection closes, PostgreSQL releases the lock and another node takes it within
//!   [`LEADER_RETRY`].
//! - **Records.** Two nodes rewriting the same document's records take turns (a lock per
//!   document for the transaction), and arrival numbers are given one at a time.
//!
//! On SQLite there is one node: it always leads and nothing is sent or listened to.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::ids::{DeviceId, SlotId};
use sqlx::Connection;
use tokio::sync::{mpsc, watch};

use crate::app_state::AppState;
use crate::store::Store;
use crate::sync::SyncHub;

/// The notification channel every node listens on.
pub const CHANNEL: &str = "kepu_nodes";
/// The session advisory lock the leader holds (one `bigint` key; "kepuLEAD").
pub const LEADER_LOCK: i64 = 0x6b65_7075_4c45_4144;
/// First key of the transaction locks on one document's records (the second is a hash
/// of its id). Two-key locks never collide with [`LEADER_LOCK`].
pub const RECORDS_LOCK_SPACE: i32 = 0x6b70_0001;
/// First key of the transaction lock under which a new booking gets its arrival number.
pub const ARRIVAL_LOCK_SPACE: i32 = 0x6b70_0002;
/// How often a node that does not lead tries the lock, and the leader checks that its
/// connection (and so its lock) is still there.
pub const LEADER_RETRY: Duration = Duration::from_millis(500);
/// How long the leader waits for the answer to its check before it takes its
/// connection for lost (instead of the TCP timeout).
pub const LEADER_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a node writes which devices are connected to it (`device_presence`).
pub const PRESENCE_EVERY: Duration = Duration::from_secs(5);
/// A node's presence rows older than this are ignored (the node stopped refreshing them).
pub const PRESENCE_STALE_MS: i64 = 15_000;
/// A notification payload stays under PostgreSQL's limit of 8000 bytes.
const MAX_PAYLOAD: usize = 7_000;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// New change rows of these documents are committed.
    Doc,
    /// The records of these venues changed (their live dashboards read again).
    Venue,
    /// Bookings of these slots changed (the leader decides them).
    Slot,
    /// These actor ids were claimed (`<actor hex>:<device id>`, see [`claim_id`]).
    Actor,
}

impl Tag {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Doc => "doc",
            Self::Venue => "venue",
            Self::Slot => "slot",
            Self::Actor => "actor",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "doc" => Self::Doc,
            "venue" => Self::Venue,
            "slot" => Self::Slot,
            "actor" => Self::Actor,
            _ => return None,
        })
    }
}

/// The payloads telling the other nodes about `ids`: `<node> <tag> <id> <id> …`, as few
/// as fit under the size limit (none for no ids).
#[must_use]
pub fn payloads(node: &str, tag: Tag, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let head = format!("{node} {}", tag.as_str());
    let mut current = head.clone();
    for id in ids {
        if current.len() + 1 + id.len() > MAX_PAYLOAD && current.len() > head.len() {
            out.push(std::mem::replace(&mut current, head.clone()));
        }
        current.push(' ');
        current.push_str(id);
    }
    if current.len() > head.len() {
        out.push(current);
    }
    out
}

/// One actor-id claim as a notification id: the actor id in hex, `:`, the device id.
#[must_use]
pub fn claim_id(actor: &[u8], device: DeviceId) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(actor.len() * 2 + 37);
    for b in actor {
        let _ = write!(out, "{b:02x}");
    }
    out.push(':');
    out.push_str(&device.to_string());
    out
}

/// A claim read back from [`claim_id`]; `None` for any other shape (or an actor id
/// longer than 64 bytes).
#[must_use]
pub fn parse_claim(id: &str) -> Option<(Vec<u8>, DeviceId)> {
    let (hex, device) = id.split_once(':')?;
    if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 128 {
        return None;
    }
    let actor = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((actor, device.parse().ok()?))
}

/// A notification read back: the node that sent it, what about and the ids (ids that do
/// not parse are left to the caller). `None` for a payload of another shape.
#[must_use]
pub fn parse(payload: &str) -> Option<(&str, Tag, Vec<&str>)> {
    let mut words = payload.split(' ');
    let node = words.next().filter(|n| !n.is_empty())?;
    let tag = Tag::parse(words.next()?)?;
    Some((node, tag, words.filter(|w| !w.is_empty()).collect()))
}

/// Does this node lead (run the work that must happen once)? Cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership {
    leading: Arc<AtomicBool>,
    /// The backend pid of the session holding the lock (0: none, or SQLite).
    pid: Arc<AtomicI32>,
    /// Whether leadership is contested in PostgreSQL (false: the only node).
    contested: bool,
    /// `None` until the first attempt at the lock finished, then whether this node leads.
    changes: watch::Sender<Option<bool>>,
}

impl Leadership {
    /// A node that always leads (SQLite: the only node).
    #[must_use]
    pub fn always() -> Self {
        let (changes, _) = watch::channel(Some(true));
        Self {
            leading: Arc::new(AtomicBool::new(true)),
            pid: Arc::new(AtomicI32::new(0)),
            contested: false,
            changes,
        }
    }

    /// A node that never leads: an edge box (ADR 0150), whose upstream creates the
    /// server's documents and decides capacity.
    #[must_use]
    pub fn never() -> Self {
        let (changes, _) = watch::channel(Some(false));
        Self {
            leading: Arc::new(AtomicBool::new(false)),
            pid: Arc::new(AtomicI32::new(0)),
            contested: false,
            changes,
        }
    }

    fn contested() -> Self {
        let (changes, _) = watch::channel(None);
        Self {
            leading: Arc::new(AtomicBool::new(false)),
            pid: Arc::new(AtomicI32::new(0)),
            contested: true,
            changes,
        }
    }

    /// Does this node lead, as PostgreSQL says now? Asked before each piece of
    /// once-only work: the leader's own check runs only every [`LEADER_RETRY`], and a
    /// connection that broke silently would leave [`Self::is_leader`] true meanwhile,
    /// while another node may already lead. Reads `pg_locks` for the lock held by the
    /// leader's session (by its backend pid); a session that was terminated or lost
    /// holds nothing, and the node stops leading at once. A failed read answers false
    /// this time without giving up leadership (the leader's own check decides).
    pub async fn confirm(&self, store: &Store) -> bool {
        if !self.is_leader() {
            return false;
        }
        if !self.contested {
            return true;
        }
        let pid = self.pid.load(Ordering::SeqCst);
        match store.holds_advisory_lock(pid, LEADER_LOCK).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!("leader lock: no longer held by this node's session");
                // Only if the session is still the one that was asked about.
                if self.pid.load(Ordering::SeqCst) == pid {
                    self.set(false);
                }
                false
            }
            Err(error) => {
                tracing::warn!(%error, "leader lock: could not confirm");
                false
            }
        }
    }

    /// Does this node lead now?
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    fn set(&self, leading: bool) {
        let was = self.leading.swap(leading, Ordering::SeqCst);
        if was != leading {
            tracing::info!(leading, "leadership changed");
        }
        self.changes.send_replace(Some(leading));
    }

    /// Waits for the first attempt at the lock; returns whether this node leads.
    pub async fn settled(&self) -> bool {
        let mut rx = self.changes.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or(false),
            Err(_) => self.is_leader(),
        }
    }

    /// Receives every change of leadership.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Option<bool>> {
        self.changes.subscribe()
    }
}

/// Starts contending for leadership on PostgreSQL (on SQLite the node always leads).
/// Ends when `stop` turns true, releasing the lock.
#[must_use]
pub fn lead(store: &Store, stop: watch::Receiver<bool>) -> Leadership {
    if store.backend() != crate::store::Backend::Postgres {
        return Leadership::always();
    }
    let leadership = Leadership::contested();
    tokio::spawn(hold_lock(store.url().to_owned(), leadership.clone(), stop));
    leadership
}

/// The leader's connection: a statement that hangs fails after 5 s, and PostgreSQL
/// probes the client's socket after 10 s of silence, so a session whose node vanished
/// ends (and releases the lock) within about half a minute, not the kernel's hours.
async fn leader_connection(url: &str) -> Result<sqlx::postgres::PgConnection, sqlx::Error> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let options = options.options([
        ("statement_timeout", "5000"),
        ("tcp_keepalives_idle", "10"),
        ("tcp_keepalives_interval", "5"),
        ("tcp_keepalives_count", "3"),
    ]);
    sqlx::postgres::PgConnection::connect_with(&options).await
}

async fn hold_lock(url: String, leadership: Leadership, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            break;
        }
        let mut conn = match leader_connection(&url).await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "leader lock: cannot connect");
                leadership.set(false);
                if wait_or_stop(&mut stop, LEADER_RETRY).await {
                    break;
                }
                continue;
            }
        };
        // Holds or tries the lock on this connection until it fails or the node stops.
        loop {
            let held: Result<bool, sqlx::Error> =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(LEADER_LOCK)
                    .fetch_one(&mut conn)
                    .await;
            match held {
                Ok(true) => {
                    match sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
                        .fetch_one(&mut conn)
                        .await
                    {
                        Ok(pid) => leadership.pid.store(pid, Ordering::SeqCst),
                        Err(error) => {
                            tracing::warn!(%error, "leader lock: query failed");
                            break;
                        }
                    }
                    leadership.set(true);
                    // The lock is ours while this session lives; check that it does.
                    loop {
                        if wait_or_stop(&mut stop, LEADER_RETRY).await {
                            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                                .bind(LEADER_LOCK)
                                .execute(&mut conn)
                                .await;
                            leadership.set(false);
                            let _ = conn.close().await;
                            return;
                        }
                        let check = tokio::time::timeout(
                            LEADER_CHECK_TIMEOUT,
                            sqlx::query("SELECT 1").execute(&mut conn),
                        )
                        .await;
                        if !matches!(check, Ok(Ok(_))) {
                            tracing::warn!("leader lock: connection lost or silent");
                            leadership.set(false);
                            break;
                        }
                        if !leadership.is_leader() {
                            // `confirm` found the lock gone: this session is not the
                            // one holding it; start again on a new connection.
                            break;
                        }
                    }
                    break;
                }
                Ok(false) => {
                    leadership.set(false);
                    if wait_or_stop(&mut stop, LEADER_RETRY).await {
                        let _ = conn.close().await;
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "leader lock: query failed");
                    leadership.set(false);
                    break;
                }
            }
        }
        if wait_or_stop(&mut stop, LEADER_RETRY).await {
            break;
        }
    }
    leadership.set(false);
}

/// Sleeps `d`; true when the node is stopping.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(d) => None,
        _ = stop.wait_for(|s| *s) => Some(true),
    };
    stopped.unwrap_or_else(|| *stop.borrow())
}

/// Shares which devices are connected to this node (PostgreSQL; nothing on SQLite): every
/// [`PRESENCE_EVERY`] the node marks its connected devices in `device_presence` and drops
/// its rows for devices gone, and rows of nodes that stopped refreshing are deleted. A
/// connection or its end is written at once too (`crate::sync`).
pub fn share_presence(state: &AppState, mut stop: watch::Receiver<bool>) {
    if state.store.backend() != crate::store::Backend::Postgres {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            let now = crate::clock::now_ms();
            let devices = state.live.connected_devices();
            let refreshed = state.store.presence_refresh(&devices, now).await;
            let pruned = state
                .store
                .presence_prune(now, now - 4 * PRESENCE_STALE_MS)
                .await;
            if let Err(error) = refreshed.and(pruned) {
                tracing::warn!(%error, "could not share the connected devices");
            }
            if wait_or_stop(&mut stop, PRESENCE_EVERY).await {
                let _ = state.store.presence_prune(i64::MAX, 0).await;
                return;
            }
        }
    });
}

/// Listens for the other nodes' notifications on PostgreSQL until `stop` turns true
/// (nothing on SQLite). After the listening connection was lost and comes back, every
/// document in memory reads its rows again (notifications sent meanwhile are lost).
pub fn listen(state: &AppState, hub: &SyncHub, stop: watch::Receiver<bool>) {
    if state.store.backend() != crate::store::Backend::Postgres {
        return;
    }
    let decider = start_decider(state.clone(), hub.clone());
    tokio::spawn(run_listener(state.clone(), hub.clone(), decider, stop));
}

async fn run_listener(
    state: AppState,
    hub: SyncHub,
    decider: mpsc::UnboundedSender<SlotId>,
    mut stop: watch::Receiver<bool>,
) {
    let mut first = true;
    loop {
        let mut listener = match connect_listener(state.store.url()).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%error, "notifications: cannot listen");
                if wait_or_stop(&mut stop, LEADER_RETRY).await {
                    return;
                }
                continue;
            }
        };
        // What was stored while this node did not listen: documents in memory read
        // their rows again (a document loaded later reads them anyway), and after a
        // loss the actor-id claims are read again (at start the hub read them itself).
        if !first {
            hub.reload_actor_claims();
        }
        first = false;
        hub.stored_elsewhere_all();
        loop {
            let received = tokio::select! {
                r = listener.try_recv() => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match received {
                Ok(Some(n)) => handle(&state, &hub, &decider, n.payload()),
                Ok(None) => {
                    // Listening again already (eager reconnect); catch up.
                    tracing::warn!("notifications: connection lost and made again");
                    hub.reload_actor_claims();
                    hub.stored_elsewhere_all();
                }
                Err(error) => {
                    tracing::warn!(%error, "notifications: connection failed");
                    break;
                }
            }
        }
        if wait_or_stop(&mut stop, LEADER_RETRY).await {
            return;
        }
    }
}

async fn connect_listener(url: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut l = sqlx::postgres::PgListener::connect(url).await?;
    l.eager_reconnect(true);
    l.listen(CHANNEL).await?;
    Ok(l)
}

fn handle(state: &AppState, hub: &SyncHub, decider: &mpsc::UnboundedSender<SlotId>, payload: &str) {
    let Some((node, tag, ids)) = parse(payload) else {
        return;
    };
    if node == state.store.node_id() {
        return;
    }
    match tag {
        Tag::Doc => {
            for id in ids {
                if let Ok(doc) = id.parse::<DocumentId>() {
                    hub.stored_elsewhere(doc);
                }
            }
        }
        Tag::Venue => {
            for id in ids {
                if let Ok(venue) = id.parse::<uuid::Uuid>() {
                    state.live.publish(venue);
                }
            }
        }
        Tag::Actor => hub.actor_claims(ids.into_iter().filter_map(parse_claim).collect()),
        Tag::Slot => {
            if state.leader.is_leader() {
                for id in ids {
                    if let Ok(slot) = id.parse::<uuid::Uuid>() {
                        let _ = decider.send(SlotId(slot));
                    }
                }
            }
        }
    }
}

/// The leader's decisions of slots other nodes reported, one at a time (each slot once
/// however often it was reported while the previous decisions ran). When this node
/// becomes the leader, it decides every slot with bookings still requested or
/// wait-listed: reports sent while no node led are not lost.
fn start_decider(state: AppState, hub: SyncHub) -> mpsc::UnboundedSender<SlotId> {
    let (tx, mut rx) = mpsc::unbounded_channel::<SlotId>();
    let mut leading = state.leader.subscribe();
    tokio::spawn(async move {
        loop {
            let mut slots: Vec<SlotId> = Vec::new();
            tokio::select! {
                first = rx.recv() => match first {
                    Some(s) => slots.push(s),
                    None => return,
                },
                changed = leading.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *leading.borrow_and_update() != Some(true) {
                        continue;
                    }
                    match state.store.slots_to_decide().await {
                        Ok(open) => slots.extend(open),
                        Err(error) => tracing::warn!(%error, "could not read the slots to decide"),
                    }
                }
            }
            while let Ok(s) = rx.try_recv() {
                slots.push(s);
            }
            slots.sort_unstable();
            slots.dedup();
            for slot in slots {
                if state.leader.confirm(&state.store).await {
                    crate::sync::worker::decide_slot(&state, &hub, slot).await;
                }
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_split_under_the_limit_and_read_back() {
        let ids: Vec<String> = (0..1_000).map(|i| format!("{i:032x}")).collect();
        let out = payloads("n1", Tag::Doc, &ids);
        assert!(out.len() > 1, "a thousand ids do not fit one payload");
        let mut back = Vec::new();
        for p in &out {
            assert!(p.len() <= MAX_PAYLOAD);
            let (node, tag, got) = parse(p).expect("parses");
            assert_eq!((node, tag), ("n1", Tag::Doc));
            back.extend(got.into_iter().map(str::to_owned));
        }
        assert_eq!(back, ids);
        assert!(payloads("n1", Tag::Slot, &[]).is_empty());
    }

    #[test]
    fn claims_read_back_and_malformed_ones_are_ignored() {
        let device = DeviceId(uuid::Uuid::from_u128(7));
        let actor = vec![0, 1, 0xab, 0xff];
        let id = claim_id(&actor, device);
        assert_eq!(parse_claim(&id), Some((actor, device)));
        let long = format!("{}:{device}", "ab".repeat(65));
        for bad in [
            "",
            ":",
            "abc:x",
            "zz:00000000-0000-0000-0000-000000000007",
            "ab:",
            "ab",
            &long,
        ] {
            assert!(parse_claim(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn payloads_of_another_shape_are_ignored() {
        for bad in ["", " ", "n1", "n1 nonsense a b", " doc a"] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(parse("n1 venue").map(|p| p.2.len()), Some(0));
    }
}
