//! A device for the tests: sync-core's engine in client mode over a real websocket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::engine::{Config, ConnId, Effects, Engine, Event, Input, Mode};
use kepu_sync_core::mem_store::MemStore;
use kepu_sync_core::writer::Writer;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Device {
    pub engine: Engine,
    pub store: MemStore,
    pub events: Vec<Event>,
    pub token: String,
    socket: Option<Socket>,
    outbox: Vec<Vec<u8>>,
    conn: u64,
    now: i64,
    /// Added to the real clock: a device whose clock is wrong (phones' often are).
    pub clock_offset: i64,
    addr: Option<std::net::SocketAddr>,
    /// When set, every frame sent (`true`) and received (`false`), in order: the
    /// golden-fixture recorder's tape (`compat.rs`).
    pub tape: Option<Vec<(bool, Vec<u8>)>>,
}

/// Opens a websocket to `/sync` with a bearer token.
pub async fn open_socket(
    addr: std::net::SocketAddr,
    token: &str,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}/sync").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(s, _)| s)
}

impl Device {
    pub fn new(writer: Writer, token: String, seed: u8) -> Self {
        let cfg = Config::new(
            Mode::Client,
            format!("dev-{}", writer.device),
            format!("st-{}", writer.device),
            [seed; 16],
            writer,
        );
        Self {
            engine: Engine::new(cfg),
            store: MemStore::default(),
            events: Vec::new(),
            token,
            socket: None,
            outbox: Vec::new(),
            conn: 0,
            now: kepu_server::clock::now_ms(),
            clock_offset: 0,
            addr: None,
            tape: None,
        }
    }

    fn apply(&mut self, fx: Effects) {
        let Effects {
            sends,
            tasks,
            events,
            ..
        } = fx;
        self.events.extend(events);
        for (_, bytes) in sends {
            self.outbox.push(bytes);
        }
        for (task, t) in tasks {
            let result = self.store.run(&t);
            let fx = self.engine.handle(self.now, Input::IoDone { task, result });
            self.apply(fx);
        }
    }

    pub fn feed(&mut self, input: Input) {
        self.now = kepu_server::clock::now_ms() + self.clock_offset;
        let fx = self.engine.handle(self.now, input);
        self.apply(fx);
    }

    pub fn edit(&mut self, doc: DocumentId, edit: Edit) {
        self.feed(Input::Edit { doc, edit });
        assert!(
            !self
                .events
                .iter()
                .any(|e| matches!(e, Event::EditFailed { .. })),
            "edit failed: {:?}",
            self.events
        );
    }

    /// Applies an edit that local validation may refuse; returns whether it was written.
    pub fn try_edit(&mut self, doc: DocumentId, edit: Edit) -> bool {
        let before = self.events.len();
        self.feed(Input::Edit { doc, edit });
        !self.events[before..]
            .iter()
            .any(|e| matches!(e, Event::EditFailed { .. }))
    }

    /// The device time of the last input, e.g. the time an edit was written at.
    pub fn last_time(&self) -> i64 {
        self.now
    }

    pub fn want(&mut self, doc: DocumentId) {
        self.feed(Input::Want { doc });
    }

    pub async fn connect(&mut self, addr: std::net::SocketAddr) {
        let socket = open_socket(addr, &self.token)
            .await
            .expect("websocket opens");
        self.socket = Some(socket);
        self.addr = Some(addr);
        self.conn += 1;
        self.feed(Input::Connected {
            conn: ConnId(self.conn),
            writer: None,
        });
    }

    pub fn disconnect(&mut self) {
        self.socket = None;
        self.feed(Input::Disconnected {
            conn: ConnId(self.conn),
        });
    }

    /// Exchanges frames until the line is quiet for `quiet`.
    pub async fn pump(&mut self, quiet: Duration) {
        loop {
            let Some(socket) = self.socket.as_mut() else {
                return;
            };
            for bytes in std::mem::take(&mut self.outbox) {
                if let Some(tape) = self.tape.as_mut() {
                    tape.push((true, bytes.clone()));
                }
                if socket.send(Ws::Binary(bytes.into())).await.is_err() {
                    self.disconnect();
                    return;
                }
            }
            match tokio::time::timeout(quiet, socket.next()).await {
                Err(_) => return,
                Ok(None | Some(Err(_))) => {
                    self.disconnect();
                    return;
                }
                Ok(Some(Ok(Ws::Binary(bytes)))) => {
                    if let Some(tape) = self.tape.as_mut() {
                        tape.push((false, bytes.to_vec()));
                    }
                    let conn = ConnId(self.conn);
                    self.feed(Input::Received {
                        conn,
                        bytes: bytes.to_vec(),
                    });
                }
                Ok(Some(Ok(Ws::Close(_)))) => {
                    self.disconnect();
                    return;
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    pub async fn sync(&mut self, addr: std::net::SocketAddr) {
        if self.socket.is_none() {
            self.connect(addr).await;
        }
        self.pump(Duration::from_millis(400)).await;
    }

    /// Syncs until the server has acknowledged every local change of `doc` (it sends its
    /// heads only once the changes are stored), the connection ends, or 30 s pass. A
    /// loaded machine may hold an acknowledgement back longer than [`Self::sync`]'s
    /// quiet period; the caller still asserts [`Self::server_has_all`].
    pub async fn sync_until_stored(&mut self, addr: std::net::SocketAddr, doc: &DocumentId) {
        self.sync(addr).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.server_has_all(doc) && self.online() && std::time::Instant::now() < deadline {
            self.pump(Duration::from_millis(400)).await;
        }
    }

    /// The server this device last connected to.
    pub fn last_addr(&self) -> Option<std::net::SocketAddr> {
        self.addr
    }

    /// Is the device connected?
    pub fn online(&self) -> bool {
        self.socket.is_some()
    }

    /// Does the server's acknowledged state (its heads, which it sends only once the
    /// changes are stored) include every local change of `doc`?
    pub fn server_has_all(&self, doc: &DocumentId) -> bool {
        self.socket.is_some() && self.engine.peer_has_all(ConnId(self.conn), doc)
    }

    pub fn doc(&self, doc: &DocumentId) -> Option<&automerge::Automerge> {
        self.engine.doc(doc)
    }
}
