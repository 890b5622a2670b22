//! An in-process kepu server for tests: sync-core's engine in server mode over a
//! [`MemStore`], served on a real local websocket (`GET /sync`, bearer token or
//! `?token=`) beside `POST /api/enroll`. It seeds one school, one venue with a slot, and
//! one confirmed booking whose roster holds a few pupils, and hands out enrollment codes,
//! pupil passes and gate codes signed with its own key. Compiled only with the
//! `test-server` feature (tests and the `kepu-test-server` binary), never into the app.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Json;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::engine::{Config, ConnId, Engine, Event, Input, Mode};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::mem_store::MemStore;
use kepu_sync_core::proof::{
    DAY_MS, GateDayCert, GateSigner, ServerSigner, gate_public_key, utc_day,
};
use kepu_sync_core::schema::booking::Status;
use kepu_sync_core::wire::{self, Message};
use kepu_sync_core::writer::{Role, Writer};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::client::core::{now_ms, random};

const SERVER_SEED: [u8; 32] = [0x5e; 32];
const GATE_SEED: [u8; 32] = [0x6a; 32];

/// The seeded world, as JSON for test scripts.
#[derive(Debug, Clone, Serialize)]
pub struct World {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The server's public key (base64url).
    pub server_public_key: String,
    /// School.
    pub school_id: String,
    /// Venue.
    pub venue_id: String,
    /// The slot of the seeded booking.
    pub slot_id: String,
    /// The venue document.
    pub venue_doc: String,
    /// The seeded, confirmed booking.
    pub booking_doc: String,
    /// The pass revocation list.
    pub revocations_doc: String,
    /// Pupils on its roster.
    pub pupils: Vec<String>,
    /// One valid pass per pupil, in the same order.
    pub passes: Vec<String>,
}

/// Frames for one connection; `None` closes it.
type ConnTx = mpsc::UnboundedSender<Option<Vec<u8>>>;

struct Inner {
    engine: Engine,
    store: MemStore,
    conns: HashMap<ConnId, (DeviceId, ConnTx)>,
    next_conn: u64,
    codes: HashMap<String, Writer>,
    tokens: HashMap<String, Writer>,
    revoked: HashSet<DeviceId>,
}

/// The server's shared state.
pub struct Shared {
    inner: Mutex<Inner>,
    signer: ServerSigner,
    world: Mutex<World>,
    /// How far the server's clock (its `Date` header) is ahead of this machine's (ms).
    clock_offset_ms: std::sync::atomic::AtomicI64,
    /// How long `/api/enroll` waits before answering, after spending the code (ms).
    enroll_delay_ms: std::sync::atomic::AtomicU64,
    school: SchoolId,
    venue: VenueId,
}

/// A running test server.
pub struct TestServer {
    /// Its address.
    pub addr: SocketAddr,
    /// Its state.
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn uuid(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | n)
}

impl Shared {
    /// Runs an input on the server engine and everything it causes.
    fn drive(&self, input: Input) -> Vec<Event> {
        let mut inner = lock(&self.inner);
        let Inner {
            engine,
            store,
            conns,
            ..
        } = &mut *inner;
        let mut queue = std::collections::VecDeque::from([input]);
        let mut events = Vec::new();
        let now = now_ms();
        while let Some(i) = queue.pop_front() {
            let fx = engine.handle(now, i);
            for (conn, bytes) in fx.sends {
                if let Some((_, tx)) = conns.get(&conn) {
                    let _ = tx.send(Some(bytes));
                }
            }
            for conn in fx.close {
                if let Some((_, tx)) = conns.get(&conn) {
                    let _ = tx.send(None);
                }
            }
            for (task, t) in fx.tasks {
                let result = store.run(&t);
                queue.push_back(Input::IoDone { task, result });
            }
            events.extend(fx.events);
        }
        events
    }

    /// The server writes an edit as itself (a decision, a roster change).
    pub fn server_edit(&self, doc: DocumentId, edit: Edit) {
        let events = self.drive(Input::Edit { doc, edit });
        for e in events {
            if let Event::EditFailed { error, .. } = e {
                tracing::warn!(%error, "server edit failed");
            }
        }
    }

    /// A one-time enrollment code for a new user with `role`; `pupil` for pupils.
    pub fn issue_code(&self, role: Role, pupil: Option<PupilId>) -> String {
        let code = format!("KEPU-{}", hex::encode(random::<8>()));
        let writer = Writer {
            device: DeviceId(uuid::Uuid::nil()),
            user: UserId(uuid::Uuid::from_bytes(random())),
            role,
            school: matches!(role, Role::Teacher | Role::Pupil | Role::Volunteer)
                .then_some(self.school),
            venue: (role == Role::VenueStaff).then_some(self.venue),
            pupil,
        };
        lock(&self.inner).codes.insert(code.clone(), writer);
        code
    }

    /// Revokes a device: its open connections get `error` with refusal
    /// `device-revoked` and close; its upgrades are refused as revoked from now on.
    pub fn revoke(&self, device: DeviceId) {
        let mut inner = lock(&self.inner);
        inner.revoked.insert(device);
        let msg = Message::Error {
            sender_id: Some("kepu-test-server".into()),
            target_id: None,
            message: "device revoked".into(),
            refusal: Some(wire::Refusal::new(wire::RefusalCode::DeviceRevoked, None)),
        }
        .encode();
        for (d, tx) in inner.conns.values() {
            if *d == device {
                let _ = tx.send(Some(msg.clone()));
                let _ = tx.send(None);
            }
        }
    }

    /// Revokes pass `serial` of `pupil` in the revocation list (devices learn of it on
    /// their next sync).
    pub fn revoke_pass(&self, pupil: PupilId, serial: u32) {
        let doc = lock(&self.world).revocations_doc.parse();
        if let Ok(doc) = doc {
            self.server_edit(doc, Edit::RevokePass { pupil, serial });
        }
    }

    /// Sets the server's clock `ms` ahead of this machine's, as its `Date` header at the
    /// `/sync` upgrade tells devices.
    pub fn set_clock_offset(&self, ms: i64) {
        self.clock_offset_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes `/api/enroll` answer `ms` after it spent the code (a slow network).
    pub fn set_enroll_delay(&self, ms: u64) {
        self.enroll_delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Is `code` still unspent?
    #[must_use]
    pub fn code_unspent(&self, code: &str) -> bool {
        lock(&self.inner).codes.contains_key(code)
    }

    /// The gate's code at `at_ms` (a gate whose clock shows that time). Like a real
    /// gate, which is certified each morning, it holds the certificate of the UTC day its
    /// clock shows, so a gate clock ahead across midnight still makes a genuine code (its
    /// window is only off the phone's clock).
    #[must_use]
    pub fn gate_code_at(&self, at_ms: i64) -> String {
        gate_for_day(&self.signer, self.venue, at_ms).code_at(at_ms)
    }

    /// The gate's rotating code now.
    #[must_use]
    pub fn gate_code(&self) -> String {
        self.gate_code_at(now_ms())
    }

    /// The seeded world.
    #[must_use]
    pub fn world(&self) -> World {
        lock(&self.world).clone()
    }

    /// A pass for any pupil id.
    #[must_use]
    pub fn pass_for(&self, pupil: PupilId) -> String {
        self.signer
            .issue_pass(pupil, self.school, 1, now_ms() + 30 * DAY_MS)
    }

    /// The server's copy of a document, if it holds one.
    #[must_use]
    pub fn has_doc(&self, doc: &DocumentId) -> bool {
        lock(&self.inner).store.docs.contains_key(doc)
    }
}

/// The venue's gate, certified for the UTC day of `at_ms` until that day ends.
fn gate_for_day(signer: &ServerSigner, venue: VenueId, at_ms: i64) -> GateSigner {
    let day = utc_day(at_ms).unwrap_or(0);
    let cert = signer.certify_gate(GateDayCert {
        venue,
        day,
        gate_key: gate_public_key(&GATE_SEED),
        expires_ms: (i64::from(day) + 1) * DAY_MS,
    });
    GateSigner::new(GATE_SEED, cert).expect("the gate's key is the one its certificate names")
}

/// Starts a test server on `127.0.0.1:0` with the seeded world.
///
/// # Errors
/// The port cannot be bound.
pub async fn start() -> std::io::Result<TestServer> {
    let signer = ServerSigner::from_seed(SERVER_SEED);
    let school = SchoolId(uuid(10));
    let venue = VenueId(uuid(20));
    let slot = SlotId(uuid(30));
    let now = now_ms();
    let server_writer = Writer::server(DeviceId(uuid(1)));
    let engine = Engine::new(Config::new(
        Mode::Server,
        "kepu-test-server".into(),
        "kepu-test-server-storage".into(),
        random(),
        server_writer,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let pupils: Vec<PupilId> = (0..4).map(|i| PupilId(uuid(100 + i))).collect();
    let venue_doc = DocumentId::from_uuid(uuid(500));
    let booking_doc = DocumentId::from_uuid(uuid(501));
    let revocations_doc = DocumentId::from_uuid(uuid(502));
    let world = World {
        url: format!("http://{addr}"),
        server_public_key: signer.public().to_base64(),
        school_id: school.to_string(),
        venue_id: venue.to_string(),
        slot_id: slot.to_string(),
        venue_doc: venue_doc.to_string(),
        booking_doc: booking_doc.to_string(),
        revocations_doc: revocations_doc.to_string(),
        pupils: pupils.iter().map(ToString::to_string).collect(),
        passes: pupils
            .iter()
            .map(|p| signer.issue_pass(*p, school, 1, now + 30 * DAY_MS))
            .collect(),
    };
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            engine,
            store: MemStore::default(),
            conns: HashMap::new(),
            next_conn: 1,
            codes: HashMap::new(),
            tokens: HashMap::new(),
            revoked: HashSet::new(),
        }),
        signer,
        world: Mutex::new(world),
        enroll_delay_ms: std::sync::atomic::AtomicU64::new(0),
        clock_offset_ms: std::sync::atomic::AtomicI64::new(0),
        school,
        venue,
    });
    shared.server_edit(venue_doc, Edit::CreateVenue { venue });
    shared.server_edit(revocations_doc, Edit::CreateRevocations);
    // This year's school log, created by the server as kepu-server does.
    let year = kepu_sync_core::calendar::china_year(now);
    shared.server_edit(
        DocumentId::school_log(school, year),
        Edit::CreateSchoolLog { school, year },
    );
    shared.server_edit(
        venue_doc,
        Edit::PutSlot {
            slot,
            start: now - 3_600_000,
            end: now + 4 * 3_600_000,
            capacity: 60,
            label: "课后 15:30".into(),
        },
    );
    shared.server_edit(
        booking_doc,
        Edit::CreateBooking {
            venue,
            slot,
            school,
            party_size: 30,
            roster: pupils,
        },
    );
    shared.server_edit(
        booking_doc,
        Edit::Decide {
            status: Status::Confirmed,
            wait_position: None,
        },
    );
    let app = axum::Router::new()
        .route("/api/enroll", post(enroll))
        .route("/sync", get(sync))
        .route("/test/gate-code", get(gate_code))
        .with_state(Arc::clone(&shared));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(TestServer {
        addr,
        shared,
        stop: Some(stop),
    })
}

#[derive(Deserialize)]
struct EnrollRequest {
    code: String,
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": code}})),
    )
        .into_response()
}

fn auth_error(code: &str, header: &'static str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, code);
    response
        .headers_mut()
        .insert("x-kepu-error", axum::http::HeaderValue::from_static(header));
    response
}

async fn enroll(State(s): State<Arc<Shared>>, Json(req): Json<EnrollRequest>) -> Response {
    let (writer, token) = {
        let mut inner = lock(&s.inner);
        let Some(mut writer) = inner.codes.remove(&req.code) else {
            return error(StatusCode::BAD_REQUEST, "invalid_enrollment_code");
        };
        writer.device = DeviceId(uuid::Uuid::from_bytes(random()));
        let token = hex::encode(random::<24>());
        inner.tokens.insert(token.clone(), writer.clone());
        (writer, token)
    };
    let delay = s.enroll_delay_ms.load(std::sync::atomic::Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    Json(serde_json::json!({
        "device_id": writer.device,
        "token": token,
        "user_id": writer.user,
        "role": writer.role.as_str(),
        "school_id": writer.school,
        "venue_id": writer.venue,
        "pupil_id": writer.pupil,
        "server_public_key": s.signer.public().to_base64(),
        "revocations_doc": lock(&s.world).revocations_doc,
    }))
    .into_response()
}

async fn gate_code(State(s): State<Arc<Shared>>) -> String {
    s.gate_code()
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn sync(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or(q.token);
    // Refused as kepu-server refuses: 401 with the JSON code, and `X-Kepu-Error` saying
    // whether the device is revoked (the phone wipes) or just not known (it keeps data).
    let Some(token) = token else {
        return auth_error("missing_token", "unauthenticated");
    };
    let writer = lock(&s.inner).tokens.get(&token).cloned();
    let Some(writer) = writer else {
        return auth_error("invalid_token", "unauthenticated");
    };
    if lock(&s.inner).revoked.contains(&writer.device) {
        return auth_error("device_revoked", "device-revoked");
    }
    let offset = s.clock_offset_ms.load(std::sync::atomic::Ordering::Relaxed);
    let mut response = ws.on_upgrade(move |socket| session(s, writer, socket));
    let date = crate::client::clock::format_http_date(now_ms() + offset);
    if let Ok(value) = axum::http::HeaderValue::from_str(&date) {
        response
            .headers_mut()
            .insert(axum::http::header::DATE, value);
    }
    response
}

async fn session(s: Arc<Shared>, writer: Writer, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    let conn = {
        let mut inner = lock(&s.inner);
        let conn = ConnId(inner.next_conn);
        inner.next_conn += 1;
        inner.conns.insert(conn, (writer.device, tx));
        conn
    };
    s.drive(Input::Connected {
        conn,
        writer: Some(writer),
    });
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Some(bytes)) => {
                    if sink.send(WsMessage::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                Some(None) | None => {
                    let _ = sink.close().await;
                    break;
                }
            },
            frame = stream.next() => match frame {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    s.drive(Input::Received { conn, bytes: bytes.to_vec() });
                }
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    lock(&s.inner).conns.remove(&conn);
    s.drive(Input::Disconnected { conn });
}
