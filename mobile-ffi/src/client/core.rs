//! The client core: the store, the sans-IO engine in client mode and the connections,
//! behind one lock. Every input runs to completion under that lock: the engine's storage
//! tasks are executed (and committed) before the call returns, so a local edit that
//! returned is on disk. Observers are called after the lock is released.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use automerge::{Automerge, ChangeHash};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::{Edit, EditError};
use kepu_sync_core::engine::{Config, ConnId, Engine, Event, Input, Mode, StorageTask};
use kepu_sync_core::proof::{RevocationList, ServerPublicKey};
use kepu_sync_core::schema::DocKind;
use tokio::sync::mpsc;

use super::error::{Error, Result};
use super::identity::Identity;
use super::store::{Store, StoredRefusal};

/// Something for a connection's writer task.
#[derive(Debug)]
pub enum Outbound {
    /// A binary frame.
    Frame(Vec<u8>),
    /// Close the connection.
    Close,
}

/// Told about merged, durable document changes.
pub trait DocListener: Send + Sync {
    /// `doc` changed (a local edit or changes from the server).
    fn changed(&self, doc: DocumentId, kind: Option<DocKind>);
}

/// Told when the sync status may have changed. Called on the thread that changed it,
/// with no lock held: post and return (the API's observers read [`Core::status`] on their
/// own delivery thread).
pub trait SyncListener: Send + Sync {
    /// The status may have changed; read [`Core::status`] for it.
    fn changed(&self);
}

/// The sync status an app shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Local changes the server has not acknowledged.
    pub pending_changes: u64,
    /// Last sync that reached every document, unix ms.
    pub last_sync_ms: Option<i64>,
    /// Refused changes, grouped by document and reason.
    pub refusals: Vec<StoredRefusal>,
    /// A connection to the server is open.
    pub connected: bool,
    /// The last network problem, if the last attempt failed.
    pub last_error: Option<String>,
    /// The server revoked this device and the local data was wiped.
    pub revoked: bool,
    /// The device is enrolled.
    pub enrolled: bool,
    /// Frame bytes sent since the app started.
    pub bytes_sent: u64,
    /// Frame bytes received since the app started.
    pub bytes_received: u64,
}

struct Session {
    identity: Identity,
    engine: Engine,
    conns: HashMap<ConnId, mpsc::UnboundedSender<Outbound>>,
    /// The booking last scanned into, pinned in memory.
    active: Option<DocumentId>,
}

/// The parsed revocation list and the versions (document, heads) it was read from.
type RevocationCache = Option<(Vec<(DocumentId, Vec<ChangeHash>)>, Arc<RevocationList>)>;

struct State {
    store: Store,
    session: Option<Session>,
}

#[derive(Default)]
struct Net {
    last_error: Option<String>,
    revoked: bool,
}

#[derive(Default)]
struct Listeners {
    next: u64,
    docs: HashMap<u64, Arc<dyn DocListener>>,
    sync: HashMap<u64, Arc<dyn SyncListener>>,
}

/// The client core, shared as `Arc<Core>`.
pub struct Core {
    server_url: String,
    /// The app version reported at enrollment and at every connect.
    app_version: Mutex<String>,
    server_key: Mutex<Option<ServerPublicKey>>,
    state: Mutex<State>,
    net: Mutex<Net>,
    listeners: Mutex<Listeners>,
    next_conn: AtomicU64,
    revocations: Mutex<RevocationCache>,
    /// When this device last wrote a local edit (unix ms), for idle maintenance.
    last_edit_ms: AtomicI64,
    /// What to add to this device's clock to get the server's (learnt at each sync).
    clock_offset_ms: AtomicI64,
    /// The latest time [`Core::server_now`] gave: it never goes back.
    last_now_ms: AtomicI64,
    /// Frame bytes sent.
    pub bytes_sent: AtomicU64,
    /// Frame bytes received.
    pub bytes_received: AtomicU64,
    pub(crate) http: reqwest::Client,
    /// Held for the whole of an enrollment: a second `enroll` waits, then finds the
    /// first one's outcome.
    enrolling: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Now, unix milliseconds.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `N` random bytes from the operating system.
#[must_use]
pub fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::fill(&mut out);
    out
}

/// A learnt clock offset this close to the one in use is ignored (HTTP dates are whole
/// seconds, and the round trip adds its own doubt).
pub const CLOCK_SLACK_MS: i64 = 2_000;

/// Meta key of the last learnt offset to the server's clock (ms).
const CLOCK_OFFSET_KEY: &str = "clock_offset_ms";

/// Documents a phone keeps in memory at most (a booking of a day's visit is ~50 KiB).
const MAX_DOCS_IN_MEMORY: usize = 256;

/// The engine of a phone: compaction waits for idle time ([`Core::maintain`]), the
/// revocation list stays in memory (ADR 0125).
fn new_engine(identity: &Identity) -> Engine {
    let mut config = Config::new(
        Mode::Client,
        identity.peer_id(),
        identity.storage_id.clone(),
        identity.actor,
        identity.writer(),
    );
    config.compact_when_idle = true;
    config.max_docs_in_memory = MAX_DOCS_IN_MEMORY;
    config.revocations_doc = identity.revocations_doc;
    Engine::new(config)
}

impl Core {
    /// Opens the store in `dir` for the server at `server_url`.
    ///
    /// # Errors
    /// The store cannot be opened, or `server_public_key` is malformed.
    pub fn open(dir: &Path, server_url: &str, server_public_key: Option<&str>) -> Result<Self> {
        let store = Store::open(dir)?;
        Self::with_store(store, server_url, server_public_key)
    }

    /// A core over an already opened store.
    ///
    /// # Errors
    /// `server_public_key` is malformed or the stored identity is corrupt.
    pub fn with_store(
        store: Store,
        server_url: &str,
        server_public_key: Option<&str>,
    ) -> Result<Self> {
        let key_text = match server_public_key {
            Some(k) => Some(k.to_owned()),
            None => store.meta("server_public_key")?,
        };
        let server_key = key_text
            .map(|k| {
                ServerPublicKey::from_base64(&k)
                    .map_err(|_| Error::InvalidInput("malformed server public key".into()))
            })
            .transpose()?;
        let mut state = State {
            store,
            session: None,
        };
        let clock_offset = state
            .store
            .meta(CLOCK_OFFSET_KEY)?
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        if let Some(identity) = Identity::load(&state.store)? {
            start_session(&mut state, identity)?;
        }
        Ok(Self {
            server_url: server_url.trim_end_matches('/').to_owned(),
            app_version: Mutex::new(env!("CARGO_PKG_VERSION").to_owned()),
            server_key: Mutex::new(server_key),
            state: Mutex::new(state),
            net: Mutex::new(Net::default()),
            listeners: Mutex::new(Listeners::default()),
            next_conn: AtomicU64::new(1),
            revocations: Mutex::new(None),
            last_edit_ms: AtomicI64::new(0),
            clock_offset_ms: AtomicI64::new(clock_offset),
            last_now_ms: AtomicI64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            enrolling: tokio::sync::Mutex::new(()),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(20))
                .build()
                .map_err(|e| Error::Other(format!("http client: {e}")))?,
        })
    }

    /// The app version this install reports to the server: the library's own version
    /// unless the app set its own with [`Core::set_app_version`].
    #[must_use]
    pub fn app_version(&self) -> String {
        lock(&self.app_version).clone()
    }

    /// Sets the app version reported at enrollment and at every connect (the host app's
    /// version, at each start). At most 64 bytes of visible text.
    ///
    /// # Errors
    /// An empty, overlong or control-character version.
    pub fn set_app_version(&self, version: &str) -> Result<()> {
        let version = version.trim();
        if version.is_empty() || version.len() > 64 || version.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "an app version is 1 to 64 bytes of visible text".into(),
            ));
        }
        version.clone_into(&mut lock(&self.app_version));
        Ok(())
    }

    /// Now by the server's clock, as last learnt (this device's clock until the first
    /// sync): the time scans are recorded at and gate codes are checked against. It
    /// never goes back within a process, so a check-out is never recorded before the
    /// check-in that preceded it, whatever the offset learnt in between.
    #[must_use]
    pub fn server_now(&self) -> i64 {
        let now = now_ms().saturating_add(self.clock_offset_ms.load(Ordering::Relaxed));
        let before = self.last_now_ms.fetch_max(now, Ordering::Relaxed);
        now.max(before)
    }

    /// The last learnt offset to the server's clock (ms to add to this device's).
    #[must_use]
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Ordering::Relaxed)
    }

    /// Records the offset to the server's clock learnt at a sync (kept across opens).
    /// An HTTP date has whole seconds: an offset within [`CLOCK_SLACK_MS`] of the one in
    /// use is noise and changes nothing (a phone whose clock is right keeps it).
    pub fn learn_clock_offset(&self, offset_ms: i64) {
        let current = self.clock_offset_ms.load(Ordering::Relaxed);
        if (current - offset_ms).abs() < CLOCK_SLACK_MS {
            return;
        }
        self.clock_offset_ms.store(offset_ms, Ordering::Relaxed);
        if let Err(e) = self.set_meta(CLOCK_OFFSET_KEY, &offset_ms.to_string()) {
            tracing::debug!(error = %e, "could not keep the clock offset");
        }
    }

    /// The server's base URL.
    #[must_use]
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The server public key proofs are checked against.
    #[must_use]
    pub fn server_key(&self) -> Option<ServerPublicKey> {
        *lock(&self.server_key)
    }

    /// Enrolls this install with a one-time code (online). Everything enrollment writes
    /// (identity, token, server key, the documents to fetch) is one transaction. Run it
    /// to completion once the request is sent (the API spawns it): the server spends the
    /// code when it answers, so dropping this future after that would lose the identity.
    ///
    /// # Errors
    /// Network, refusal, or already enrolled.
    pub async fn enroll(&self, code: &str) -> Result<Identity> {
        let _one_at_a_time = self.enrolling.lock().await;
        if self.identity()?.is_some() {
            return Err(Error::AlreadyEnrolled);
        }
        let code = code.trim();
        if code.is_empty() || code.len() > 512 {
            return Err(Error::InvalidInput("malformed enrollment code".into()));
        }
        let app_version = self.app_version();
        let e = super::enroll::enroll(&self.http, &self.server_url, code, &app_version).await?;
        let role = kepu_sync_core::writer::Role::parse(&e.role)
            .ok_or_else(|| Error::Other("server sent an unknown role".into()))?;
        // The key proofs are verified with: the one the app pinned at `open`, else the
        // one the server sent; a server whose key differs from the pinned one is refused.
        let sent_key = e
            .server_public_key
            .as_deref()
            .map(|k| {
                ServerPublicKey::from_base64(k.trim())
                    .map_err(|_| Error::Other("malformed server public key in enrollment".into()))
            })
            .transpose()?;
        let pinned = self.server_key();
        if let (Some(p), Some(k)) = (pinned, sent_key)
            && p != k
        {
            return Err(Error::Rejected("server_public_key_mismatch".into()));
        }
        let revocations_doc = e
            .revocations_doc
            .as_deref()
            .map(|d| {
                d.trim()
                    .parse::<DocumentId>()
                    .map_err(|_| Error::Other("malformed revocation list id in enrollment".into()))
            })
            .transpose()?;
        let actor = random::<16>();
        let identity = Identity {
            device: e.device_id,
            token: e.token,
            user: e.user_id,
            role,
            school: e.school_id,
            venue: e.venue_id,
            pupil: e.pupil_id,
            actor,
            storage_id: format!("kepu-device-{}", hex::encode(random::<16>())),
            revocations_doc,
        };
        let key = pinned.or(sent_key);
        // Every device that scans passes needs the revocation list; venue staff their venue.
        let want: Vec<DocumentId> = identity
            .revocations_doc
            .into_iter()
            .chain(identity.venue_doc())
            .collect();
        {
            let mut st = lock(&self.state);
            if st.session.is_some() {
                return Err(Error::AlreadyEnrolled);
            }
            let key_text = key.map(|k| k.to_base64());
            identity.save(
                &mut st.store,
                &[("server_public_key", key_text.as_deref())],
                &want,
                now_ms(),
            )?;
            start_session(&mut st, identity.clone())?;
        }
        if let Some(k) = key {
            *lock(&self.server_key) = Some(k);
        }
        for doc in want {
            self.handle(Input::Want { doc }, false)?;
        }
        lock(&self.net).revoked = false;
        self.notify_sync();
        Ok(identity)
    }

    /// Reconnects this enrolled install with a reconnect code made for it on the fleet
    /// page (ADR 0172), after its token was rotated: the same device id, a new token.
    /// Nothing on the phone changes but the token, so unsynced work syncs on the next
    /// connection under the actor ids the server already knows as this device's.
    ///
    /// # Errors
    /// [`Error::NotEnrolled`]; [`Error::InvalidInput`] for a malformed code;
    /// [`Error::Network`]; [`Error::Rejected`] (`invalid_enrollment_code`) for a code that
    /// is not a live reconnect code of this device. Nothing is changed on an error.
    pub async fn reenroll(&self, code: &str) -> Result<Identity> {
        let _one_at_a_time = self.enrolling.lock().await;
        let identity = self.require_identity()?;
        let code = code.trim();
        if code.is_empty() || code.len() > 512 {
            return Err(Error::InvalidInput("malformed reconnect code".into()));
        }
        let app_version = self.app_version();
        let e = super::enroll::reenroll(
            &self.http,
            &self.server_url,
            code,
            &app_version,
            identity.device,
        )
        .await?;
        if e.device_id != identity.device || e.user_id != identity.user {
            return Err(Error::Other(
                "the server answered a reconnection for another device".into(),
            ));
        }
        let updated = {
            let mut st = lock(&self.state);
            st.store.set_meta(&[("token", Some(e.token.as_str()))])?;
            let session = st.session.as_mut().ok_or(Error::NotEnrolled)?;
            session.identity.token = e.token;
            session.identity.clone()
        };
        self.set_error(None);
        self.notify_sync();
        Ok(updated)
    }

    /// The enrolled identity.
    ///
    /// # Errors
    /// Never in practice (kept for symmetry with other reads).
    pub fn identity(&self) -> Result<Option<Identity>> {
        Ok(lock(&self.state)
            .session
            .as_ref()
            .map(|s| s.identity.clone()))
    }

    /// The identity, or [`Error::NotEnrolled`].
    ///
    /// # Errors
    /// Not enrolled.
    pub fn require_identity(&self) -> Result<Identity> {
        self.identity()?.ok_or(Error::NotEnrolled)
    }

    /// Feeds one input and runs every storage task it causes, then tells listeners.
    /// `local` marks edits of this device (their changes count as pending).
    ///
    /// # Errors
    /// Not enrolled.
    pub fn handle(&self, input: Input, local: bool) -> Result<Vec<Event>> {
        let events = {
            let mut st = lock(&self.state);
            let State { store, session } = &mut *st;
            let session = session.as_mut().ok_or(Error::NotEnrolled)?;
            drive(
                store,
                session,
                input,
                local,
                &self.bytes_sent,
                self.server_now(),
            )
        };
        self.dispatch(&events);
        Ok(events)
    }

    fn dispatch(&self, events: &[Event]) {
        let mut sync_changed = false;
        let docs: Vec<Arc<dyn DocListener>> =
            lock(&self.listeners).docs.values().cloned().collect();
        for e in events {
            match e {
                Event::DocChanged { doc, kind } => {
                    for l in &docs {
                        l.changed(*doc, *kind);
                    }
                    sync_changed = true;
                }
                Event::AccessLost { doc } => {
                    for l in &docs {
                        l.changed(*doc, None);
                    }
                    sync_changed = true;
                }
                Event::Synced { .. } | Event::Refused { .. } => sync_changed = true,
                _ => {}
            }
        }
        if sync_changed {
            self.notify_sync();
        }
    }

    /// Tells the sync listeners that the status may have changed (they read it when
    /// they deliver it, off this thread).
    pub fn notify_sync(&self) {
        let listeners: Vec<Arc<dyn SyncListener>> =
            lock(&self.listeners).sync.values().cloned().collect();
        for l in listeners {
            l.changed();
        }
    }

    /// Writes `edit` into `doc` as this device; returns once it is durable.
    ///
    /// # Errors
    /// The device's own validation refused it ([`Error::Refused`]), the edit does not fit
    /// the document ([`Error::InvalidInput`]), the device is full ([`Error::StorageFull`])
    /// or storage failed.
    pub fn edit(&self, doc: DocumentId, edit: Edit) -> Result<()> {
        self.last_edit_ms.store(now_ms(), Ordering::Relaxed);
        let events = self.handle(Input::Edit { doc, edit }, true)?;
        for e in &events {
            match e {
                Event::EditFailed { doc: d, error } if *d == doc => {
                    return Err(match error {
                        EditError::Refused(refusal) => Error::Refused {
                            code: refusal.code.clone(),
                            path: refusal.path.clone(),
                        },
                        other => Error::InvalidInput(other.to_string()),
                    });
                }
                Event::StorageFailed { doc: d, error } if *d == doc => {
                    return Err(if error.starts_with(super::store::FULL) {
                        Error::StorageFull
                    } else {
                        Error::Storage(error.clone())
                    });
                }
                _ => {}
            }
        }
        if !events
            .iter()
            .any(|e| matches!(e, Event::EditApplied { doc: d } if *d == doc))
        {
            return Err(Error::Other("the edit was not applied".into()));
        }
        // Announce the document on open connections (a new document has no peers yet).
        if self.connected() {
            self.handle(Input::Want { doc }, false)?;
        }
        self.notify_sync();
        Ok(())
    }

    /// Asks for a document this device does not hold yet (fetched on the next sync).
    ///
    /// # Errors
    /// Not enrolled or storage failed.
    pub fn want(&self, doc: DocumentId) -> Result<()> {
        {
            let st = lock(&self.state);
            if st.session.is_none() {
                return Err(Error::NotEnrolled);
            }
            st.store.want(&doc, now_ms())?;
        }
        self.handle(Input::Want { doc }, false)?;
        Ok(())
    }

    /// Reads a document. One the store holds is loaded into the engine on first read
    /// and stays there until evicted, so that the next read costs no SQLite read and no
    /// rebuild of the document.
    ///
    /// # Errors
    /// Not enrolled or storage failed.
    pub fn read<T>(&self, doc: &DocumentId, f: impl FnOnce(&Automerge) -> T) -> Result<Option<T>> {
        let mut st = lock(&self.state);
        let State { store, session } = &mut *st;
        let session = session.as_mut().ok_or(Error::NotEnrolled)?;
        if session.engine.doc(doc).is_none() && store.holds(doc)? {
            // Loading is a storage task run right here; a held document is already
            // local, so the `Want` adds nothing but the load.
            let _ = drive(
                store,
                session,
                Input::Want { doc: *doc },
                false,
                &self.bytes_sent,
                self.server_now(),
            );
        }
        if let Some(d) = session.engine.doc(doc) {
            return Ok((!d.get_heads().is_empty()).then(|| f(d)));
        }
        let Some(d) = load_doc(store, doc)? else {
            return Ok(None);
        };
        Ok(Some(f(&d)))
    }

    /// Does the store hold (or want) `doc`?
    ///
    /// # Errors
    /// Storage failed.
    pub fn holds(&self, doc: &DocumentId) -> Result<bool> {
        lock(&self.state).store.holds(doc)
    }

    /// Limits the store to `pages` pages of 4 KiB (a device that is full, in tests).
    ///
    /// # Errors
    /// Storage failed.
    pub fn limit_store_pages(&self, pages: u32) -> Result<()> {
        lock(&self.state).store.limit_pages(pages)
    }

    /// Keeps `doc` (the booking being scanned into) in memory, and lets the previous
    /// one go.
    pub fn pin_active(&self, doc: DocumentId) {
        let mut st = lock(&self.state);
        if let Some(session) = st.session.as_mut()
            && session.active != Some(doc)
        {
            if let Some(old) = session.active.replace(doc) {
                session.engine.pin(old, false);
            }
            session.engine.pin(doc, true);
        }
    }

    /// The cached revocation list, if it was read from exactly `version`.
    pub(crate) fn cached_revocations(
        &self,
        version: &[(DocumentId, Vec<ChangeHash>)],
    ) -> Option<Arc<RevocationList>> {
        lock(&self.revocations)
            .as_ref()
            .filter(|(v, _)| v.as_slice() == version)
            .map(|(_, l)| Arc::clone(l))
    }

    /// Caches the revocation list read from `version`.
    pub(crate) fn cache_revocations(
        &self,
        version: Vec<(DocumentId, Vec<ChangeHash>)>,
        list: Arc<RevocationList>,
    ) {
        *lock(&self.revocations) = Some((version, list));
    }

    /// Housekeeping for idle time: compacts documents whose change rows are due (a full
    /// save of the document and an fsync, kept off the writes a person waits for), saves
    /// sync states that moved, evicts idle documents, checkpoints the WAL. The app's runtime calls it when
    /// no edit came for a while ([`Core::last_edit_ms`]) and after each sync.
    ///
    /// # Errors
    /// Not enrolled.
    pub fn maintain(&self) -> Result<()> {
        self.handle(Input::Tick, false)?;
        lock(&self.state).store.checkpoint()
    }

    /// When the last local edit of this process was written (unix ms; 0 if none yet).
    #[must_use]
    pub fn last_edit_ms(&self) -> i64 {
        self.last_edit_ms.load(Ordering::Relaxed)
    }

    /// Every document held or wanted, with its kind once known.
    ///
    /// # Errors
    /// Not enrolled or storage failed.
    pub fn documents(&self) -> Result<Vec<(DocumentId, Option<DocKind>)>> {
        let st = lock(&self.state);
        if st.session.is_none() {
            return Err(Error::NotEnrolled);
        }
        st.store.documents()
    }

    /// A meta value of the store.
    ///
    /// # Errors
    /// Storage failed.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        lock(&self.state).store.meta(key)
    }

    /// Several meta values read together, so that values written together by
    /// [`Core::set_metas`] are read as one set.
    ///
    /// # Errors
    /// Storage failed.
    pub fn metas<const N: usize>(&self, keys: [&str; N]) -> Result<[Option<String>; N]> {
        let st = lock(&self.state);
        let mut values = [const { None }; N];
        for (value, key) in values.iter_mut().zip(keys) {
            *value = st.store.meta(key)?;
        }
        Ok(values)
    }

    /// Sets a meta value.
    ///
    /// # Errors
    /// Storage failed.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        lock(&self.state).store.set_meta(&[(key, Some(value))])
    }

    /// Sets (or, with `None`, clears) several meta values in one transaction.
    ///
    /// # Errors
    /// Storage failed.
    pub fn set_metas(&self, values: &[(&str, Option<&str>)]) -> Result<()> {
        lock(&self.state).store.set_meta(values)
    }

    /// The sync status.
    ///
    /// # Errors
    /// Storage failed.
    pub fn status(&self) -> Result<Status> {
        let (pending, last, refusals, enrolled, connected) = {
            let st = lock(&self.state);
            (
                st.store.pending_changes()?,
                st.store
                    .meta("last_sync_ms")?
                    .and_then(|v| v.parse::<i64>().ok()),
                st.store.refusals()?,
                st.session.is_some(),
                Self::open_conns(&st),
            )
        };
        let net = lock(&self.net);
        Ok(Status {
            pending_changes: pending,
            last_sync_ms: last,
            refusals,
            connected,
            last_error: net.last_error.clone(),
            revoked: net.revoked,
            enrolled,
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        })
    }

    /// Rows in a store table (tests).
    ///
    /// # Errors
    /// Storage failed.
    pub fn store_count(&self, table: &str) -> Result<u64> {
        lock(&self.state).store.count(table)
    }

    /// Did the server revoke this device (since it was last enrolled)?
    #[must_use]
    pub fn revoked(&self) -> bool {
        lock(&self.net).revoked
    }

    /// Is a connection open?
    #[must_use]
    pub fn connected(&self) -> bool {
        Self::open_conns(&lock(&self.state))
    }

    /// Does the enrolled session have an open connection? A connection of a session
    /// wiped (revoked, signed out) no longer counts, even before its task has ended: the
    /// status never shows a revoked device as connected.
    fn open_conns(st: &State) -> bool {
        st.session.as_ref().is_some_and(|s| !s.conns.is_empty())
    }

    /// Attaches a new connection and sends `join`. Returns its id and the documents it
    /// will sync.
    ///
    /// # Errors
    /// Not enrolled.
    pub fn attach(&self, tx: mpsc::UnboundedSender<Outbound>) -> Result<(ConnId, Vec<DocumentId>)> {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let (events, docs) = {
            let mut st = lock(&self.state);
            let State { store, session } = &mut *st;
            let session = session.as_mut().ok_or(Error::NotEnrolled)?;
            session.conns.insert(conn, tx);
            let docs: Vec<DocumentId> = session.engine.local_docs().iter().copied().collect();
            let events = drive(
                store,
                session,
                Input::Connected { conn, writer: None },
                false,
                &self.bytes_sent,
                self.server_now(),
            );
            (events, docs)
        };
        lock(&self.net).last_error = None;
        self.dispatch(&events);
        self.notify_sync();
        Ok((conn, docs))
    }

    /// Does the server on `conn` have every change of `doc`? If so, the document's
    /// local changes are acknowledged.
    ///
    /// # Errors
    /// Storage failed.
    pub fn settled(&self, conn: ConnId, doc: &DocumentId) -> Result<bool> {
        let st = lock(&self.state);
        let Some(session) = st.session.as_ref() else {
            return Ok(false);
        };
        let has_doc = session
            .engine
            .doc(doc)
            .is_some_and(|d| !d.get_heads().is_empty());
        if has_doc && session.engine.peer_has_all(conn, doc) {
            st.store.acknowledge(doc)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Detaches a closed connection (sync states are saved).
    pub fn detach(&self, conn: ConnId) {
        let events = {
            let mut st = lock(&self.state);
            let State { store, session } = &mut *st;
            session.as_mut().map(|session| {
                session.conns.remove(&conn);
                drive(
                    store,
                    session,
                    Input::Disconnected { conn },
                    false,
                    &self.bytes_sent,
                    self.server_now(),
                )
            })
        };
        if let Some(events) = events {
            self.dispatch(&events);
        }
        self.notify_sync();
    }

    /// Records a network failure for the status.
    pub fn set_error(&self, error: Option<String>) {
        lock(&self.net).last_error = error;
        self.notify_sync();
    }

    /// Records a successful sync.
    ///
    /// # Errors
    /// Storage failed.
    pub fn synced_at(&self, at: i64) -> Result<()> {
        lock(&self.state)
            .store
            .set_meta(&[("last_sync_ms", Some(at.to_string().as_str()))])?;
        self.notify_sync();
        Ok(())
    }

    /// The server revoked this device: close connections, wipe the store, forget the
    /// identity, and tell the app.
    ///
    /// # Errors
    /// Storage failed while wiping.
    pub fn wipe_revoked(&self) -> Result<()> {
        let result = {
            let mut st = lock(&self.state);
            if let Some(session) = st.session.take() {
                for tx in session.conns.values() {
                    let _ = tx.send(Outbound::Close);
                }
            }
            st.store.wipe()
        };
        lock(&self.net).revoked = true;
        tracing::warn!("device revoked by the server; local data wiped");
        self.notify_sync();
        result
    }

    /// Signs this device's user out: the store is emptied (identity, token, documents)
    /// so the next user can enroll, but only if the server holds every local change. The
    /// check and the wipe are one step under the store's lock: no check-in slips in
    /// between. Open connections are closed. The server's refusals of earlier changes
    /// (kept on the server too) go with the store.
    ///
    /// # Errors
    /// [`Error::UnsyncedWork`] with the number of changes the server has not
    /// acknowledged (nothing touched); [`Error::NotEnrolled`]; storage.
    pub fn sign_out(&self) -> Result<()> {
        {
            let mut st = lock(&self.state);
            if st.session.is_none() {
                return Err(Error::NotEnrolled);
            }
            let pending = st.store.pending_changes()?;
            if pending > 0 {
                return Err(Error::UnsyncedWork(pending));
            }
            if let Some(session) = st.session.take() {
                for tx in session.conns.values() {
                    let _ = tx.send(Outbound::Close);
                }
            }
            st.store.wipe()?;
        }
        *lock(&self.revocations) = None;
        {
            let mut net = lock(&self.net);
            net.revoked = false;
            net.last_error = None;
        }
        tracing::info!("signed out; the store is empty");
        self.notify_sync();
        Ok(())
    }

    /// Adds a document listener; returns its id for [`Core::remove_listener`].
    pub fn add_doc_listener(&self, l: Arc<dyn DocListener>) -> u64 {
        let mut ls = lock(&self.listeners);
        ls.next += 1;
        let id = ls.next;
        ls.docs.insert(id, l);
        id
    }

    /// Adds a sync listener.
    pub fn add_sync_listener(&self, l: Arc<dyn SyncListener>) -> u64 {
        let mut ls = lock(&self.listeners);
        ls.next += 1;
        let id = ls.next;
        ls.sync.insert(id, l);
        id
    }

    /// Removes a listener of either kind.
    pub fn remove_listener(&self, id: u64) {
        let mut ls = lock(&self.listeners);
        ls.docs.remove(&id);
        ls.sync.remove(&id);
    }
}

fn start_session(state: &mut State, identity: Identity) -> Result<()> {
    let mut engine = new_engine(&identity);
    let docs: Vec<DocumentId> = state
        .store
        .documents()?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let _ = engine.handle(now_ms(), Input::Register { docs });
    state.session = Some(Session {
        identity,
        engine,
        conns: HashMap::new(),
        active: None,
    });
    Ok(())
}

/// Runs `input` and everything it causes to completion.
fn drive(
    store: &mut Store,
    session: &mut Session,
    input: Input,
    local: bool,
    bytes_sent: &AtomicU64,
    now: i64,
) -> Vec<Event> {
    let mut queue = VecDeque::from([input]);
    let mut events = Vec::new();
    while let Some(input) = queue.pop_front() {
        let fx = session.engine.handle(now, input);
        for (conn, bytes) in fx.sends {
            if let Some(tx) = session.conns.get(&conn) {
                bytes_sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                let _ = tx.send(Outbound::Frame(bytes));
            }
        }
        for conn in fx.close {
            if let Some(tx) = session.conns.get(&conn) {
                let _ = tx.send(Outbound::Close);
            }
        }
        for (task, t) in &fx.tasks {
            let is_local = local && matches!(t, StorageTask::Append { .. });
            let result = store.run(t, is_local, now);
            queue.push_back(Input::IoDone {
                task: *task,
                result,
            });
        }
        for e in &fx.events {
            if let Event::Synced { doc } = e
                && let Err(err) = store.acknowledge(doc)
            {
                tracing::warn!(error = %err, "could not record an acknowledgement");
            }
        }
        events.extend(fx.events);
    }
    events
}

fn load_doc(store: &Store, doc: &DocumentId) -> Result<Option<Automerge>> {
    let loaded = store.load(doc)?;
    let restored = kepu_sync_core::stored::restore(loaded.snapshot.as_deref(), loaded.changes);
    for problem in &restored.problems {
        tracing::error!(doc = %doc, problem = %problem, "stored document partly unreadable");
    }
    let d = restored.doc;
    if d.get_heads().is_empty() {
        return Ok(None);
    }
    Ok(Some(d))
}
