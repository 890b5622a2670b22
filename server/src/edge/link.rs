//! The edge's side of an edge box (ADR 0150): its enrollment with the upstream, the
//! venue's roster written into its own tables, and the link that syncs the venue's
//! documents with the upstream.
//!
//! The link is a client-mode engine, like a phone's, whose storage is the edge's own
//! database, the one its engine shards serve the venue's devices from. The two sides
//! meet in the database the way two server nodes do (ADR 0120): what the link appends
//! from the upstream, it tells the shards (`stored_elsewhere`) and projects into the
//! edge's records; what the shards stored from devices, the link reads (it polls every
//! document it syncs) and sends up. Before it sends, it reports which device owns each
//! actor id seen at the edge, so the upstream can check and validate them as those
//! devices' changes.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::engine::{
    Config, ConnId, Engine, Event, Input, IoResult, Loaded, Mode, StorageTask,
};
use kepu_sync_core::ids::{DeviceId, UserId, VenueId};
use kepu_sync_core::refusal::RefusalCode;
use kepu_sync_core::writer::{Role, Writer};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use super::state::EdgeStatus;
use super::upstream::{ActorClaim, ActorReport, ActorVerdict, Owners, OwnersQuery};
use crate::app_state::AppState;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::store::{Roster, Store};
use crate::sync::SyncHub;

/// The owner an edge records for an actor id that is no device's of its roster (another
/// device's upstream, or the upstream server's own): no device at the edge may write
/// under it.
pub const NOBODY_HERE: Uuid = Uuid::from_u128(0x6b65_7075_2d65_6467_652d_6e6f_626f_6479);

/// Most actor claims in one report to the upstream.
pub const REPORT_CHUNK: usize = 5_000;

/// How often the link reads what the edge's devices stored, and reports new actor ids.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often the link reads the roster again while connected.
pub const ROSTER_EVERY: Duration = Duration::from_secs(30);
/// Longest wait between two attempts to reach the upstream.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The edge's enrollment with its upstream, kept in `edge_state`.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The edge's device.
    pub device: DeviceId,
    /// Its user.
    pub user: Uuid,
    /// The venue it serves.
    pub venue: Uuid,
    /// Its bearer token with the upstream.
    pub token: String,
    /// The upstream's public key (gate codes and passes verify against it offline).
    pub server_key: String,
}

impl Identity {
    fn writer(&self) -> Writer {
        Writer {
            device: self.device,
            user: UserId(self.user),
            role: Role::VenueStaff,
            school: None,
            venue: Some(VenueId(self.venue)),
            pupil: None,
        }
    }
}

#[derive(Deserialize)]
struct Enrolled {
    device_id: Uuid,
    token: String,
    user_id: Uuid,
    role: String,
    venue_id: Option<Uuid>,
    server_public_key: String,
}

/// `http://host:port` without a trailing slash.
fn base(upstream: &str) -> String {
    upstream.trim().trim_end_matches('/').to_owned()
}

/// The edge's identity: read from its database, or enrolled with `code` at the first
/// start.
///
/// # Errors
/// No identity and no code, the upstream refused or could not be reached, or a
/// database failure.
pub async fn enroll(store: &Store, upstream: &str, code: Option<&str>) -> Result<Identity> {
    let get = |name: &'static str| async move {
        store
            .edge_state(name)
            .await?
            .ok_or(Error::Corrupt("edge_state"))
    };
    if store.edge_state("device").await?.is_some() {
        let parse = |t: String| t.parse::<Uuid>().map_err(|_| Error::Corrupt("edge_state"));
        return Ok(Identity {
            device: DeviceId(parse(get("device").await?)?),
            user: parse(get("user").await?)?,
            venue: parse(get("venue").await?)?,
            token: get("token").await?,
            server_key: get("server_key").await?,
        });
    }
    let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
        return Err(Error::Config(
            "an edge box needs its enrollment code (--edge-code) at its first start".into(),
        ));
    };
    let response = reqwest::Client::new()
        .post(format!("{}/api/enroll", base(upstream)))
        .json(&serde_json::json!({
            "code": code.trim(),
            "app_version": concat!("kepu-edge/", env!("CARGO_PKG_VERSION")),
        }))
        .send()
        .await
        .map_err(|e| Error::Config(format!("the upstream cannot be reached: {e}")))?;
    if !response.status().is_success() {
        return Err(Error::Config(format!(
            "the upstream refused the enrollment ({})",
            response.status()
        )));
    }
    let e: Enrolled = response
        .json()
        .await
        .map_err(|e| Error::Config(format!("the upstream's enrollment answer: {e}")))?;
    let ("venue_staff", Some(venue)) = (e.role.as_str(), e.venue_id) else {
        return Err(Error::Config(
            "this code is not an edge box's code (admin create-edge)".into(),
        ));
    };
    for (name, value) in [
        ("user", e.user_id.to_string()),
        ("venue", venue.to_string()),
        ("token", e.token.clone()),
        ("server_key", e.server_public_key.clone()),
        // Last: its presence means the rest is there.
        ("device", e.device_id.to_string()),
    ] {
        store.set_edge_state(name, &value).await?;
    }
    Ok(Identity {
        device: DeviceId(e.device_id),
        user: e.user_id,
        venue,
        token: e.token,
        server_key: e.server_public_key,
    })
}

/// Why a session with the upstream ended.
#[derive(Debug)]
enum Ended {
    /// The upstream revoked this edge.
    Revoked,
    /// Unreachable, refused, or the connection closed.
    Down(String),
}

impl From<Error> for Ended {
    fn from(e: Error) -> Self {
        Self::Down(e.to_string())
    }
}

/// Starts the link; it runs until `stop` turns true or the upstream revokes the edge.
pub fn start(
    state: AppState,
    hub: SyncHub,
    id: Identity,
    upstream: &str,
    status: EdgeStatus,
    stop: watch::Receiver<bool>,
) {
    let mut config = Config::new(
        Mode::Client,
        format!("kepu-edge-{}", id.device),
        format!("edge-{}", id.device),
        rand::random(),
        id.writer(),
    );
    // The shards compact and evict; the link holds the venue's few documents.
    config.idle_evict_ms = i64::MAX;
    config.compact_after = usize::MAX;
    let link = Link {
        state,
        hub,
        base: base(upstream),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default(),
        id,
        status,
        engine: Engine::new(config),
        conn: 0,
        docs: BTreeSet::new(),
        quarantined: HashSet::new(),
        stored: BTreeSet::new(),
        reported: HashSet::new(),
        refused: 0,
    };
    tokio::spawn(link.run(stop));
}

struct Link {
    state: AppState,
    hub: SyncHub,
    base: String,
    http: reqwest::Client,
    id: Identity,
    status: EdgeStatus,
    engine: Engine,
    conn: u64,
    /// The documents synced with the upstream.
    docs: BTreeSet<DocumentId>,
    /// Changes the upstream refused: never read back from the rows again.
    quarantined: HashSet<automerge::ChangeHash>,
    /// Documents the link appended to since the shards were last told.
    stored: BTreeSet<DocumentId>,
    /// Actor ids reported in this session.
    reported: HashSet<Vec<u8>>,
    /// Changes refused since the last status update.
    refused: usize,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn revoked(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("x-kepu-error")
        .is_some_and(|v| v.as_bytes() == b"device-revoked")
}

impl Link {
    /// Sends one of the edge's own calls to the upstream with its token and reads the
    /// JSON answer: [`Ended::Revoked`] if the upstream says the edge is revoked,
    /// [`Ended::Down`] for any other failure (the link tries again later).
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, Ended> {
        let r = request
            .bearer_auth(&self.id.token)
            .send()
            .await
            .map_err(|e| Ended::Down(e.to_string()))?;
        if revoked(&r) {
            return Err(Ended::Revoked);
        }
        if !r.status().is_success() {
            return Err(Ended::Down(format!("{}: {}", r.url().path(), r.status())));
        }
        r.json().await.map_err(|e| Ended::Down(e.to_string()))
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            if *stop.borrow() {
                break;
            }
            match self.session(&mut stop).await {
                Ended::Revoked => {
                    tracing::error!(
                        "the upstream revoked this edge box: it stops serving; its data is kept"
                    );
                    if let Err(e) = self
                        .state
                        .store
                        .set_edge_state("revoked_at", &now_ms().to_string())
                        .await
                    {
                        tracing::warn!(error = %e, "could not record the revocation");
                    }
                    self.status.disconnected(now_ms());
                    self.status.revoke();
                    break;
                }
                Ended::Down(why) => {
                    if self.conn > 0 {
                        tracing::info!(%why, "upstream link down");
                    }
                }
            }
            self.status.disconnected(now_ms());
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if self.status.view(now_ms()).upstream_connected {
                backoff = Duration::from_millis(250);
            }
        }
    }

    async fn roster(&self) -> Result<Roster, Ended> {
        let roster: Roster = self
            .call(self.http.get(format!("{}/api/edge/roster", self.base)))
            .await?;
        self.state
            .store
            .apply_edge_roster(&roster, now_ms())
            .await?;
        Ok(roster)
    }

    /// Reports the actor ids claimed at the edge that this session has not reported yet
    /// (all of them after a reconnect: the upstream may have restarted), in reports of
    /// at most [`REPORT_CHUNK`]. Claims for [`NOBODY_HERE`] are the upstream's own news.
    async fn report_claims(&mut self) -> Result<(), Ended> {
        let claims: Vec<(Vec<u8>, DeviceId)> = self
            .state
            .store
            .actor_claims()
            .await?
            .into_iter()
            .filter(|(a, d)| d.0 != NOBODY_HERE && !self.reported.contains(a))
            .collect();
        for chunk in claims.chunks(REPORT_CHUNK) {
            let report = ActorReport {
                claims: chunk
                    .iter()
                    .map(|(a, d)| ActorClaim {
                        actor: hex::encode(a),
                        device: d.0,
                    })
                    .collect(),
            };
            let verdict: ActorVerdict = self
                .call(
                    self.http
                        .post(format!("{}/api/edge/actors", self.base))
                        .json(&report),
                )
                .await?;
            if !verdict.refused.is_empty() {
                tracing::warn!(
                    refused = verdict.refused.len(),
                    "the upstream refused actor ids seen at this edge"
                );
            }
            self.reported.extend(chunk.iter().map(|(a, _)| a.clone()));
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Socket, Ended> {
        let url = format!(
            "{}/sync",
            self.base
                .replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1)
        );
        let mut request = url
            .into_client_request()
            .map_err(|e| Ended::Down(e.to_string()))?;
        let auth = format!("Bearer {}", self.id.token)
            .parse()
            .map_err(|_| Ended::Down("token".into()))?;
        request.headers_mut().insert("authorization", auth);
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(r))
                if r.headers()
                    .get("x-kepu-error")
                    .is_some_and(|v| v.as_bytes() == b"device-revoked") =>
            {
                Err(Ended::Revoked)
            }
            Err(e) => Err(Ended::Down(e.to_string())),
        }
    }

    /// The documents to sync: the venue's, the revocation list, the bookings the
    /// upstream lists and every document the edge holds.
    async fn gather(&mut self, roster: Option<&Roster>) -> Result<Vec<DocumentId>> {
        let mut new = Vec::new();
        let mut add = |d: DocumentId, docs: &mut BTreeSet<DocumentId>| {
            if docs.insert(d) {
                new.push(d);
            }
        };
        add(
            DocumentId::from_bytes(*self.id.venue.as_bytes()),
            &mut self.docs,
        );
        add(crate::sync::documents::REVOCATIONS_DOC, &mut self.docs);
        if let Some(r) = roster {
            for d in r.docs.iter().filter_map(|d| d.parse().ok()) {
                add(d, &mut self.docs);
            }
        }
        for (d, _) in self.state.store.document_ids().await? {
            add(d, &mut self.docs);
        }
        Ok(new)
    }

    async fn session(&mut self, stop: &mut watch::Receiver<bool>) -> Ended {
        match self.session_inner(stop).await {
            Ok(()) => Ended::Down("closed".into()),
            Err(e) => e,
        }
    }

    async fn session_inner(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), Ended> {
        let roster = self.roster().await?;
        self.reported.clear();
        self.report_claims().await?;
        let mut socket = self.connect().await?;
        self.conn += 1;
        let conn = ConnId(self.conn);
        let mut out = Vec::new();
        self.feed(Input::Connected { conn, writer: None }, &mut out)
            .await;
        // Every document, also those wanted in an earlier session, is announced again.
        if let Err(e) = self.gather(Some(&roster)).await {
            self.feed(Input::Disconnected { conn }, &mut out).await;
            return Err(e.into());
        }
        let held: Vec<DocumentId> = self.docs.iter().copied().collect();
        for doc in held {
            self.feed(Input::Want { doc }, &mut out).await;
        }
        self.status.connected(now_ms());
        let mut poll = tokio::time::interval(POLL_EVERY);
        let mut roster_every = tokio::time::interval(ROSTER_EVERY);
        roster_every.tick().await;
        let mut ticks: u32 = 0;
        let result = loop {
            let mut failed = None;
            for bytes in std::mem::take(&mut out) {
                if let Err(e) = socket.send(Ws::Binary(bytes.into())).await {
                    failed = Some(e.to_string());
                    break;
                }
            }
            if let Some(e) = failed {
                break Err(Ended::Down(e));
            }
            tokio::select! {
                frame = socket.next() => match frame {
                    Some(Ok(Ws::Binary(bytes))) => {
                        self.feed(Input::Received { conn, bytes: bytes.to_vec() }, &mut out).await;
                    }
                    Some(Ok(Ws::Close(_))) | None => break Err(Ended::Down("closed by the upstream".into())),
                    Some(Err(e)) => break Err(Ended::Down(e.to_string())),
                    Some(Ok(_)) => {}
                },
                _ = poll.tick() => {
                    // Claims first: the changes read next may be under new actor ids.
                    if let Err(e) = self.report_claims().await {
                        break Err(e);
                    }
                    let new = match self.gather(None).await {
                        Ok(new) => new,
                        Err(e) => break Err(e.into()),
                    };
                    for doc in new {
                        self.feed(Input::Want { doc }, &mut out).await;
                    }
                    let docs: Vec<DocumentId> = self.docs.iter().copied().collect();
                    for doc in docs {
                        // A document the engine dropped (its storage failed) is wanted
                        // again; the others read what the shards stored.
                        let input = if self.engine.doc(&doc).is_some() {
                            Input::StoredElsewhere { doc }
                        } else {
                            Input::Want { doc }
                        };
                        self.feed(input, &mut out).await;
                    }
                    ticks = ticks.wrapping_add(1);
                    if ticks.is_multiple_of(10) {
                        self.feed(Input::Tick, &mut out).await;
                    }
                    let unsynced = self
                        .docs
                        .iter()
                        .filter(|d| self.engine.doc(d).is_some() && !self.engine.peer_has_all(conn, d))
                        .count();
                    self.status.progress(now_ms(), unsynced, std::mem::take(&mut self.refused));
                }
                _ = roster_every.tick() => {
                    let new = match self.roster().await {
                        Ok(roster) => self.gather(Some(&roster)).await.map_err(Ended::from),
                        Err(e) => Err(e),
                    };
                    match new {
                        Ok(new) => {
                            for doc in new {
                                self.feed(Input::Want { doc }, &mut out).await;
                            }
                        }
                        Err(e) => break Err(e),
                    }
                }
                _ = stop.changed() => break Ok(()),
            }
        };
        let mut rest = Vec::new();
        self.feed(Input::Disconnected { conn }, &mut rest).await;
        let _ = socket.close(None).await;
        result
    }

    /// Hands `input` to the engine and carries out what it asks, storage first; frames
    /// to send are added to `out`.
    async fn feed(&mut self, input: Input, out: &mut Vec<Vec<u8>>) {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let fx = self.engine.handle(now_ms(), input);
            out.extend(fx.sends.into_iter().map(|(_, bytes)| bytes));
            for event in fx.events {
                self.on_event(event);
            }
            for (task, t) in fx.tasks {
                let result = self.run_task(t).await;
                queue.push_back(Input::IoDone { task, result });
            }
        }
        for doc in std::mem::take(&mut self.stored) {
            // The shards serve it to the venue's devices; the dashboard counts it.
            self.hub.stored_elsewhere(doc);
            project(&self.state, doc).await;
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Refused {
                doc,
                refusal,
                changes,
                ..
            } => {
                tracing::warn!(doc = %doc, code = %refusal.code, changes, "the upstream refused changes relayed by this edge");
                self.refused += changes;
            }
            Event::ServerRefused {
                code: RefusalCode::DeviceRevoked,
                ..
            } => {
                // The connection closes next; the roster call then sees the revocation.
                tracing::warn!("the upstream says this edge box is revoked");
            }
            Event::StorageFailed { doc, error } => {
                tracing::warn!(doc = %doc, %error, "edge link: storage failed");
            }
            _ => {}
        }
    }

    /// Before changes from the upstream are stored at the edge: claims every actor id of
    /// theirs that the edge does not know, for its owner as the upstream says, or for
    /// [`NOBODY_HERE`] when it is no roster device's. Otherwise a device at the edge
    /// could take an actor id that is another device's upstream, and the upstream would
    /// take its changes for that device's.
    async fn learn_owners(
        &mut self,
        changes: &[kepu_sync_core::engine::StoredChange],
    ) -> Result<(), Ended> {
        let shared = self.hub.shared().clone();
        let mut unknown: Vec<Vec<u8>> = Vec::new();
        for c in changes {
            let Ok(change) = automerge::Change::from_bytes(c.bytes.clone()) else {
                continue;
            };
            let actor = change.actor_id().to_bytes().to_vec();
            if shared.actor_owner(&actor).is_none() && !unknown.contains(&actor) {
                unknown.push(actor);
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let query = OwnersQuery {
            actors: unknown.iter().map(hex::encode).collect(),
        };
        let answer: Owners = self
            .call(
                self.http
                    .post(format!("{}/api/edge/owners", self.base))
                    .json(&query),
            )
            .await?;
        let mut claims: Vec<(Vec<u8>, DeviceId)> = Vec::new();
        for (hex_actor, owner) in answer.owners {
            let Ok(actor) = hex::decode(&hex_actor) else {
                continue;
            };
            if unknown.contains(&actor) {
                claims.push((actor, DeviceId(owner.unwrap_or(NOBODY_HERE))));
            }
        }
        let mut per_device: std::collections::BTreeMap<DeviceId, Vec<Vec<u8>>> =
            std::collections::BTreeMap::new();
        for (a, d) in &claims {
            per_device.entry(*d).or_default().push(a.clone());
        }
        for (device, actors) in per_device {
            let task = StorageTask::ClaimActors { device, actors };
            if let Err(e) = self
                .state
                .store
                .run_document_tasks(&[&task], now_ms())
                .await
            {
                // A device here took it first; the shards learn the upstream's owner.
                tracing::warn!(error = %e, "edge link: an actor id claimed here is another device's upstream");
            }
        }
        // The shards refuse them from any other device from now on.
        self.hub.actor_claims(claims);
        Ok(())
    }

    fn keep(&self, mut loaded: Loaded) -> Loaded {
        if !self.quarantined.is_empty() {
            loaded
                .changes
                .retain(|c| !self.quarantined.contains(&c.hash));
        }
        loaded
    }

    async fn run_task(&mut self, task: StorageTask) -> IoResult {
        if let StorageTask::Append { doc, changes, .. } = &task {
            // Not stored before their actor ids are claimed for their owners here; the
            // engine retries, and the next poll wants the document again if it gave up.
            if let Err(e) = self.learn_owners(changes).await {
                return IoResult::Failed(match e {
                    Ended::Revoked => "the upstream revoked this edge".into(),
                    Ended::Down(why) => format!("the owners of new actor ids: {why}"),
                });
            }
            return match self
                .state
                .store
                .run_document_tasks(&[&task], now_ms())
                .await
            {
                Ok(()) => {
                    self.stored.insert(*doc);
                    IoResult::Done
                }
                Err(e) => IoResult::Failed(e.to_string()),
            };
        }
        let store = &self.state.store;
        let result = match &task {
            StorageTask::Load { doc } => store.load_document(*doc).await.map(Some),
            StorageTask::LoadChanges { doc } => store.load_changes(*doc).await.map(Some),
            StorageTask::Quarantine { doc, changes, .. } => {
                // Kept in the edge's rows (the device that wrote them may still hold
                // them); never sent up again in this run.
                tracing::warn!(doc = %doc, changes = changes.len(), "changes set aside: refused upstream");
                self.quarantined.extend(changes.iter().map(|c| c.hash));
                Ok(None)
            }
            // The edge keeps its copy: its devices may still read the document.
            StorageTask::Forget { .. } => Ok(None),
            other => store
                .run_document_tasks(&[other], now_ms())
                .await
                .map(|()| None),
        };
        match result {
            Ok(Some(loaded)) => IoResult::Loaded(self.keep(loaded)),
            Ok(None) => IoResult::Done,
            Err(e) => IoResult::Failed(e.to_string()),
        }
    }
}

/// Writes the records of a document the link stored, as the storage worker does for
/// the devices' changes (no capacity decision: the upstream decides).
async fn project(state: &AppState, doc: DocumentId) {
    let d = match crate::records::load(&state.store, doc).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(doc = %doc, error = %e, "edge link: could not read for records");
            return;
        }
    };
    let projection = crate::records::project(doc, &d);
    let heads = d.get_heads();
    match crate::records::write(&state.store, doc, &projection, Some(&heads), now_ms()).await {
        Ok(_) => state.live.publish_projection(&projection),
        Err(e) => tracing::warn!(doc = %doc, error = %e, "edge link: records not written"),
    }
}
