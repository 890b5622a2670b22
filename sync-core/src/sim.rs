//! A deterministic simulator: one server and N devices, each an [`Engine`] over a
//! [`MemStore`], connected by links that can go offline, drop (and so break), duplicate
//! and reorder frames, and peers that crash and restart with their store. Tests written
//! against it read like the product: "two phones scan the same pupil offline…".

use std::collections::{HashMap, HashSet, VecDeque};

use automerge::{Automerge, ChangeHash};

use crate::doc_id::DocumentId;
use crate::edits::Edit;
use crate::engine::{
    Config, ConnId, Effects, Engine, Event, Input, IoResult, Mode, StorageTask, TaskId,
};
use crate::ids::DeviceId;
use crate::mem_store::MemStore;
use crate::writer::Writer;

/// A tiny deterministic random source (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Next 64 random bits.
    pub const fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (n > 0).
    pub const fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `n` random bytes.
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        out
    }

    /// True with probability `pct`/100.
    pub const fn chance(&mut self, pct: u64) -> bool {
        pct > 0 && self.below(100) < pct
    }
}

/// One simulated peer: an engine, its store and what it reported.
#[derive(Debug)]
pub struct Node {
    /// The engine.
    pub engine: Engine,
    /// Its durable store (survives crashes).
    pub store: MemStore,
    /// Everything the engine reported.
    pub events: Vec<Event>,
    /// When false, storage tasks are written but their completion is held back until
    /// [`Sim::release_io`] (to crash between "persisted" and "replied").
    pub auto_io: bool,
    held: VecDeque<(TaskId, IoResult)>,
    config: Config,
}

impl Node {
    fn new(config: Config, store: MemStore) -> Self {
        let mut engine = Engine::new(config.clone());
        engine.load_actor_claims(store.actor_claims.clone());
        Self {
            engine,
            store,
            events: Vec::new(),
            auto_io: true,
            held: VecDeque::new(),
            config,
        }
    }

    /// The node's writer identity.
    #[must_use]
    pub const fn writer(&self) -> &Writer {
        &self.config.writer
    }

    /// A loaded document.
    #[must_use]
    pub fn doc(&self, id: &DocumentId) -> Option<&Automerge> {
        self.engine.doc(id)
    }

    /// Refusals this node reported.
    pub fn refusals(&self) -> impl Iterator<Item = &crate::validate::Refusal> {
        self.events.iter().filter_map(|e| match e {
            Event::Refused { refusal, .. } => Some(refusal),
            _ => None,
        })
    }
}

/// Network faults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Percent of frames lost; a lost frame breaks its connection (as a dead TCP link
    /// does), and the device reconnects on the next [`Sim::reconnect_all`].
    pub drop_pct: u64,
    /// Percent of frames delivered twice.
    pub duplicate_pct: u64,
    /// Deliver links in random interleavings (reorders frames across devices).
    pub reorder: bool,
    /// Hold the server's storage completions and release them at random points between
    /// deliveries, as a real storage worker does: documents are busy when frames arrive.
    pub hold_server_io: bool,
    /// Now and then hand the server the next frame of every device at once, as the
    /// server's hub does with the messages it read from its queue together
    /// ([`Input::Messages`], ADR 0191).
    pub read_together: bool,
}

#[derive(Debug)]
struct Link {
    online: bool,
    server_conn: ConnId,
    device_conn: ConnId,
    to_server: VecDeque<Vec<u8>>,
    to_device: VecDeque<Vec<u8>>,
}

/// The simulated world.
#[derive(Debug)]
pub struct Sim {
    /// The server.
    pub server: Node,
    /// The devices.
    pub devices: Vec<Node>,
    links: Vec<Link>,
    /// Random source.
    pub rng: Rng,
    /// Faults in force.
    pub faults: Faults,
    /// Simulated time, unix ms.
    pub now: i64,
    next_conn: u64,
    /// Changes whose append the server has been told is written (or that its store held
    /// when it crashed): what it may acknowledge.
    written: HashSet<ChangeHash>,
    /// The server's appends in flight: their changes.
    appends: HashMap<TaskId, Vec<ChangeHash>>,
}

/// Whose effects are being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Server,
    Device(usize),
}

impl Sim {
    /// A world with a server (whose identity is `server`) and no devices yet.
    #[must_use]
    pub fn new(seed: u64, server: Writer) -> Self {
        let mut rng = Rng::new(seed);
        let cfg = Config::new(
            Mode::Server,
            "kepu-server".into(),
            "server-storage".into(),
            rng.bytes(),
            server,
        );
        Self {
            server: Node::new(cfg, MemStore::default()),
            devices: Vec::new(),
            links: Vec::new(),
            rng,
            faults: Faults::default(),
            now: 1_767_225_600_000,
            next_conn: 1,
            written: HashSet::new(),
            appends: HashMap::new(),
        }
    }

    /// Makes the server verify check-in proofs with `key` (and passes against the
    /// revocation list document `revocations`). Call before anything else happens.
    pub fn set_server_proof_checks(
        &mut self,
        key: crate::proof::ServerPublicKey,
        revocations: Option<DocumentId>,
    ) {
        self.adjust_server(|config| {
            config.proof_key = Some(key);
            config.revocations_doc = revocations;
        });
    }

    /// Changes the server's settings with `adjust`. Call before anything else happens.
    pub fn adjust_server(&mut self, adjust: impl FnOnce(&mut Config)) {
        let mut config = self.server.config.clone();
        adjust(&mut config);
        let store = std::mem::take(&mut self.server.store);
        self.server = Node::new(config, store);
    }

    /// Adds an offline device for `writer`; returns its index.
    pub fn add_device(&mut self, writer: Writer) -> usize {
        self.add_device_with(writer, |_| {})
    }

    /// Adds an offline device for `writer` with its settings changed by `adjust`.
    pub fn add_device_with(&mut self, writer: Writer, adjust: impl FnOnce(&mut Config)) -> usize {
        let i = self.devices.len();
        let mut cfg = Config::new(
            Mode::Client,
            format!("device-{}", writer.device),
            format!("storage-{}", writer.device),
            self.rng.bytes(),
            writer,
        );
        adjust(&mut cfg);
        self.devices.push(Node::new(cfg, MemStore::default()));
        self.links.push(Link {
            online: false,
            server_conn: ConnId(0),
            device_conn: ConnId(0),
            to_server: VecDeque::new(),
            to_device: VecDeque::new(),
        });
        i
    }

    /// A fresh random document id.
    pub fn new_doc_id(&mut self) -> DocumentId {
        DocumentId::from_bytes(self.rng.bytes())
    }

    /// A fresh UUID v7 text (scan and entry ids).
    pub fn new_entry_id(&mut self) -> String {
        crate::ids::uuid_v7(self.now, self.rng.bytes()).to_string()
    }

    /// Advances the clock.
    pub const fn advance(&mut self, ms: i64) {
        self.now += ms;
    }

    fn node(&mut self, who: Who) -> &mut Node {
        match who {
            Who::Server => &mut self.server,
            Who::Device(i) => &mut self.devices[i],
        }
    }

    fn feed(&mut self, who: Who, input: Input) {
        if let (Who::Server, Input::IoDone { task, result }) = (who, &input)
            && let Some(hashes) = self.appends.remove(task)
            && matches!(result, IoResult::Done)
        {
            self.written.extend(hashes);
        }
        let now = self.now;
        let fx = self.node(who).engine.handle(now, input);
        self.apply(who, fx);
    }

    fn apply(&mut self, who: Who, fx: Effects) {
        let Effects {
            sends,
            tasks,
            events,
            close,
        } = fx;
        self.node(who).events.extend(events);
        for (conn, bytes) in sends {
            self.route(who, conn, bytes);
        }
        let hold = who == Who::Server && self.faults.hold_server_io;
        for (id, task) in tasks {
            if let (Who::Server, StorageTask::Append { changes, .. }) = (who, &task) {
                self.appends
                    .insert(id, changes.iter().map(|c| c.hash).collect());
            }
            let node = self.node(who);
            let result = node.store.run(&task);
            // Actor claims gate no acknowledgement: they are never held.
            let claim = matches!(task, StorageTask::ClaimActors { .. });
            if (node.auto_io && !hold) || claim {
                self.feed(who, Input::IoDone { task: id, result });
            } else {
                node.held.push_back((id, result));
            }
        }
        for conn in close {
            if let Some(i) = self
                .links
                .iter()
                .position(|l| l.online && (l.server_conn == conn || l.device_conn == conn))
            {
                self.set_online(i, false);
            }
        }
    }

    fn route(&mut self, from: Who, conn: ConnId, bytes: Vec<u8>) {
        let link = match from {
            Who::Server => self
                .links
                .iter_mut()
                .find(|l| l.online && l.server_conn == conn)
                .map(|l| &mut l.to_device),
            Who::Device(i) => self
                .links
                .get_mut(i)
                .filter(|l| l.online && l.device_conn == conn)
                .map(|l| &mut l.to_server),
        };
        if let Some(q) = link {
            q.push_back(bytes);
        }
    }

    /// Brings device `i` online (a new connection) or offline.
    pub fn set_online(&mut self, i: usize, online: bool) {
        if self.links[i].online == online {
            return;
        }
        if online {
            let (s, d) = (ConnId(self.next_conn), ConnId(self.next_conn + 1));
            self.next_conn += 2;
            let l = &mut self.links[i];
            l.online = true;
            l.server_conn = s;
            l.device_conn = d;
            l.to_server.clear();
            l.to_device.clear();
            let writer = self.devices[i].writer().clone();
            self.feed(
                Who::Server,
                Input::Connected {
                    conn: s,
                    writer: Some(writer),
                },
            );
            self.feed(
                Who::Device(i),
                Input::Connected {
                    conn: d,
                    writer: None,
                },
            );
        } else {
            let l = &mut self.links[i];
            l.online = false;
            l.to_server.clear();
            l.to_device.clear();
            let (s, d) = (l.server_conn, l.device_conn);
            self.feed(Who::Server, Input::Disconnected { conn: s });
            self.feed(Who::Device(i), Input::Disconnected { conn: d });
        }
    }

    /// Brings every device online.
    pub fn reconnect_all(&mut self) {
        for i in 0..self.devices.len() {
            self.set_online(i, true);
        }
    }

    /// Takes every device offline.
    pub fn disconnect_all(&mut self) {
        for i in 0..self.devices.len() {
            self.set_online(i, false);
        }
    }

    /// Device `i` writes an edit (online or not).
    pub fn edit(&mut self, i: usize, doc: DocumentId, edit: Edit) {
        self.feed(Who::Device(i), Input::Edit { doc, edit });
    }

    /// Device `i` writes an edit without validating it (a tampered app).
    pub fn edit_unchecked(&mut self, i: usize, doc: DocumentId, edit: &Edit) {
        let now = self.now;
        let fx = self.devices[i].engine.edit_unchecked(now, doc, edit);
        self.apply(Who::Device(i), fx);
    }

    /// Device `i` sends `bytes` as one frame to the server, if it is online (a tampered app
    /// that writes the protocol itself).
    pub fn send_raw(&mut self, i: usize, bytes: Vec<u8>) {
        if let Some(l) = self.links.get_mut(i).filter(|l| l.online) {
            l.to_server.push_back(bytes);
        }
    }

    /// The server writes an edit as itself.
    pub fn server_edit(&mut self, doc: DocumentId, edit: Edit) {
        self.feed(Who::Server, Input::Edit { doc, edit });
    }

    /// Device `i` asks for a document it does not have.
    pub fn want(&mut self, i: usize, doc: DocumentId) {
        self.feed(Who::Device(i), Input::Want { doc });
    }

    /// Frames in flight on device `i`'s link: (to the server, to the device).
    #[must_use]
    pub fn in_flight(&self, i: usize) -> (usize, usize) {
        let l = &self.links[i];
        (l.to_server.len(), l.to_device.len())
    }

    /// Delivers the next frame on device `i`'s link in one direction (no faults); false
    /// if there was none.
    pub fn deliver(&mut self, i: usize, to_server: bool) -> bool {
        let l = &mut self.links[i];
        let (s, d) = (l.server_conn, l.device_conn);
        let next = if to_server {
            l.to_server.pop_front()
        } else {
            l.to_device.pop_front()
        };
        let Some(bytes) = next else {
            return false;
        };
        if to_server {
            self.feed(Who::Server, Input::Received { conn: s, bytes });
        } else {
            self.feed(Who::Device(i), Input::Received { conn: d, bytes });
        }
        true
    }

    /// Releases the oldest held storage completion of the server; false if none.
    pub fn release_one_server_io(&mut self) -> bool {
        let Some((task, result)) = self.server.held.pop_front() else {
            return false;
        };
        self.feed(Who::Server, Input::IoDone { task, result });
        true
    }

    /// Releases the newest held storage completion of the server; false if none.
    pub fn release_newest_server_io(&mut self) -> bool {
        let Some((task, result)) = self.server.held.pop_back() else {
            return false;
        };
        self.feed(Who::Server, Input::IoDone { task, result });
        true
    }

    /// Storage completions the server holds.
    #[must_use]
    pub fn held_server_io(&self) -> usize {
        self.server.held.len()
    }

    /// Each online device's documents: (device, its engine, its connection, document).
    fn online_docs(&self) -> impl Iterator<Item = (usize, &Engine, ConnId, &DocumentId)> {
        self.devices
            .iter()
            .enumerate()
            .filter(|(i, _)| self.links[*i].online)
            .flat_map(|(i, node)| {
                let conn = self.links[i].device_conn;
                node.engine
                    .local_docs()
                    .iter()
                    .map(move |doc| (i, &node.engine, conn, doc))
            })
    }

    /// Every (device, document) where an online device does not know that the server
    /// holds every change it made: the promise "synced means the server has it" broken.
    #[must_use]
    pub fn unacknowledged(&self) -> Vec<(usize, DocumentId, usize)> {
        self.online_docs()
            .filter_map(|(i, engine, conn, doc)| {
                let n = engine.unacknowledged(conn, doc);
                (n > 0).then_some((i, *doc, n))
            })
            .collect()
    }

    /// Every (device, document, change) where an online device believes the server holds
    /// a change of its own that the server was never told is written: the promise
    /// "acknowledged means stored" broken (issue 6).
    #[must_use]
    pub fn acknowledged_unwritten(&self) -> Vec<(usize, DocumentId, ChangeHash)> {
        self.online_docs()
            .flat_map(|(i, engine, conn, doc)| {
                engine
                    .acknowledged(conn, doc)
                    .into_iter()
                    .filter(|h| !self.written.contains(h))
                    .map(move |h| (i, *doc, h))
            })
            .collect()
    }

    /// Delivers one frame (or, with held storage completions, releases one at a random
    /// point); false if nothing was in flight.
    pub fn step(&mut self) -> bool {
        if self.faults.hold_server_io && !self.server.held.is_empty() && self.rng.chance(35) {
            return self.release_one_server_io();
        }
        let ready: Vec<(usize, bool)> = self
            .links
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                let mut v = Vec::new();
                if !l.to_server.is_empty() {
                    v.push((i, true));
                }
                if !l.to_device.is_empty() {
                    v.push((i, false));
                }
                v
            })
            .collect();
        if ready.is_empty() {
            return self.release_one_server_io();
        }
        if self.faults.read_together && self.rng.chance(30) && ready.iter().any(|(_, s)| *s) {
            self.deliver_together();
            return true;
        }
        let pick = if self.faults.reorder {
            usize::try_from(self.rng.below(ready.len() as u64)).unwrap_or(0)
        } else {
            0
        };
        let (i, to_server) = ready[pick];
        let l = &mut self.links[i];
        let Some(bytes) = (if to_server {
            l.to_server.pop_front()
        } else {
            l.to_device.pop_front()
        }) else {
            return true;
        };
        let (s, d) = (l.server_conn, l.device_conn);
        if self.rng.chance(self.faults.drop_pct) {
            self.set_online(i, false);
            return true;
        }
        let times = if self.rng.chance(self.faults.duplicate_pct) {
            2
        } else {
            1
        };
        for _ in 0..times {
            if !self.links[i].online {
                break;
            }
            if to_server {
                self.feed(
                    Who::Server,
                    Input::Received {
                        conn: s,
                        bytes: bytes.clone(),
                    },
                );
            } else {
                self.feed(
                    Who::Device(i),
                    Input::Received {
                        conn: d,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
        true
    }

    /// The next frame from every device to the server, handed over as one input (a
    /// frame that does not decode goes alone, as the server's sessions send it).
    fn deliver_together(&mut self) {
        let mut msgs = Vec::new();
        let mut alone = Vec::new();
        for l in &mut self.links {
            if !l.online {
                continue;
            }
            let Some(bytes) = l.to_server.pop_front() else {
                continue;
            };
            match crate::wire::decode(&bytes) {
                Ok(msg) => msgs.push((l.server_conn, Box::new(msg))),
                Err(_) => alone.push((l.server_conn, bytes)),
            }
        }
        self.feed(Who::Server, Input::Messages { msgs });
        for (conn, bytes) in alone {
            self.feed(Who::Server, Input::Received { conn, bytes });
        }
    }

    /// Delivers frames until none is in flight (or `max` steps). Returns the steps taken.
    pub fn run(&mut self, max: usize) -> usize {
        let mut n = 0;
        while n < max && self.step() {
            n += 1;
            self.now += 1;
        }
        n
    }

    /// Reconnects everyone and runs to quiet, repeating while faults break links. Then
    /// checks the product's promise: every device knows that the server holds every change
    /// it made (on its current connection, without another reconnect).
    ///
    /// # Panics
    /// When a device is left believing the server lacks some of its changes.
    pub fn settle(&mut self) {
        for _ in 0..200 {
            self.reconnect_all();
            self.run(200_000);
            if self.links.iter().all(|l| l.online) {
                break;
            }
        }
        let stuck = self.unacknowledged();
        assert!(
            stuck.is_empty(),
            "devices left without an acknowledgement after settling \
             (device, document, changes): {stuck:?}"
        );
    }

    /// Feeds a tick to every node (eviction).
    pub fn tick(&mut self) {
        self.feed(Who::Server, Input::Tick);
        for i in 0..self.devices.len() {
            self.feed(Who::Device(i), Input::Tick);
        }
    }

    /// Releases storage completions held on the server (see [`Node::auto_io`]).
    pub fn release_server_io(&mut self) {
        while let Some((task, result)) = self.server.held.pop_front() {
            self.feed(Who::Server, Input::IoDone { task, result });
        }
    }

    /// The server crashes: memory, connections and held completions are lost, the store
    /// survives. It restarts at once with the same identity.
    pub fn crash_server(&mut self) {
        for l in &mut self.links {
            l.online = false;
            l.to_server.clear();
            l.to_device.clear();
        }
        for i in 0..self.devices.len() {
            let d = self.links[i].device_conn;
            self.feed(Who::Device(i), Input::Disconnected { conn: d });
        }
        let config = self.server.config.clone();
        let store = std::mem::take(&mut self.server.store);
        self.appends.clear();
        for stored in store.docs.values() {
            self.written.extend(stored.changes.keys().copied());
            if let Some(snapshot) = stored.snapshot.as_deref()
                && let Ok(d) = Automerge::load(snapshot)
            {
                self.written
                    .extend(d.get_changes(&[]).iter().map(|c| c.hash()));
            }
        }
        self.server = Node::new(config, store);
    }

    /// Device `i` crashes and restarts with its store.
    pub fn crash_device(&mut self, i: usize) {
        self.set_online(i, false);
        let config = self.devices[i].config.clone();
        let store = std::mem::take(&mut self.devices[i].store);
        let docs: Vec<DocumentId> = store.docs.keys().copied().collect();
        self.devices[i] = Node::new(config, store);
        self.feed(Who::Device(i), Input::Register { docs });
    }

    /// The device id of device `i`.
    #[must_use]
    pub fn device_id(&self, i: usize) -> DeviceId {
        self.devices[i].writer().device
    }

    /// Runs a storage task on the server store directly (tests inspecting storage).
    pub fn server_store_run(&mut self, task: &StorageTask) -> IoResult {
        self.server.store.run(task)
    }
}
