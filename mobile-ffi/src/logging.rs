//! The library's logs, handed to the app: the app installs a [`LogSink`] (Android:
//! `android.util.Log`, iOS: `os_log`) and the library's `tracing` events reach it on the
//! library's own log thread, never the thread that logged (a check-in does not wait for
//! logcat). The library logs no personal data: no names, tokens or scanned codes; ids
//! are pseudonymous.
//!
//! A small `tracing` subscriber of our own, installed once as the process's global
//! default the first time a sink is set: a phone app has no other Rust logging.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::api::ApiError;

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, uniffi::Enum)]
pub enum LogLevel {
    /// Failures the user may notice.
    Error,
    /// Something odd that the library handled (an auth error, a skipped compaction).
    Warn,
    /// Notable steps (enrolled, signed out, revoked).
    Info,
    /// Details for a developer.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn of(level: Level) -> Self {
        match level {
            Level::ERROR => Self::Error,
            Level::WARN => Self::Warn,
            Level::INFO => Self::Info,
            Level::DEBUG => Self::Debug,
            Level::TRACE => Self::Trace,
        }
    }
}

/// Where the library's log lines go; the app implements it.
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    /// One line: its level, the module that logged it (`kepu_mobile_ffi::…`,
    /// `kepu_sync_core::…`; the libraries underneath only at `Warn` and `Error`) and the
    /// message with its fields (`key=value`).
    fn log(&self, level: LogLevel, target: String, message: String);
}

/// Lines waiting for the log thread at most; more are dropped (and counted).
const QUEUE: usize = 1_024;

struct Line {
    level: LogLevel,
    target: &'static str,
    message: String,
}

/// The installed sink's queue and level (0 = none installed).
struct Forward {
    level: AtomicU8,
    queue: Mutex<Option<SyncSender<Line>>>,
    dropped: AtomicU64,
}

static FORWARD: OnceLock<Arc<Forward>> = OnceLock::new();

fn rank(level: LogLevel) -> u8 {
    match level {
        LogLevel::Error => 1,
        LogLevel::Warn => 2,
        LogLevel::Info => 3,
        LogLevel::Debug => 4,
        LogLevel::Trace => 5,
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            self.0.push(' ');
            self.0.push_str(field.name());
            self.0.push('=');
            self.0.push_str(value);
        }
    }
}

struct Subscribed(Arc<Forward>);

impl Subscriber for Subscribed {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let mut level = self.0.level.load(Ordering::Relaxed);
        // The libraries underneath (HTTP, websockets) only when they warn.
        if !metadata.target().starts_with("kepu_") {
            level = level.min(rank(LogLevel::Warn));
        }
        metadata.is_event() && rank(LogLevel::of(*metadata.level())) <= level
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let meta = event.metadata();
        let line = Line {
            level: LogLevel::of(*meta.level()),
            target: meta.target(),
            message: message.0,
        };
        let queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = queue.as_ref()
            && let Err(TrySendError::Full(_)) = tx.try_send(line)
        {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Sends the library's log lines at `level` and above to `sink`, on the library's log
/// thread; `None` stops logging. Call it once at app start (again to change the level or
/// the sink). Lines that pile up faster than the sink takes them (over 1,024) are
/// dropped, never waited for.
///
/// # Errors
/// Another `tracing` subscriber was already installed in this process (a Rust host
/// that logs on its own), or the log thread could not start.
#[uniffi::export]
pub fn set_log_sink(sink: Option<Arc<dyn LogSink>>, level: LogLevel) -> Result<(), ApiError> {
    let forward = match FORWARD.get() {
        Some(f) => Arc::clone(f),
        None => {
            let f = Arc::new(Forward {
                level: AtomicU8::new(0),
                queue: Mutex::new(None),
                dropped: AtomicU64::new(0),
            });
            tracing::subscriber::set_global_default(Subscribed(Arc::clone(&f))).map_err(|_| {
                ApiError::Other {
                    reason: "another log subscriber is installed in this process".into(),
                }
            })?;
            let _ = FORWARD.set(Arc::clone(&f));
            f
        }
    };
    let sender = match sink {
        None => None,
        Some(sink) => {
            let (tx, rx) = sync_channel::<Line>(QUEUE);
            let counter = Arc::clone(&forward);
            std::thread::Builder::new()
                .name("kepu-log".into())
                .spawn(move || {
                    // Ends when the sender is replaced or removed.
                    while let Ok(line) = rx.recv() {
                        sink.log(line.level, line.target.to_owned(), line.message);
                        let dropped = counter.dropped.swap(0, Ordering::Relaxed);
                        if dropped > 0 {
                            sink.log(
                                LogLevel::Warn,
                                "kepu_mobile_ffi::logging".into(),
                                format!("{dropped} log lines dropped (the sink was slow)"),
                            );
                        }
                    }
                })
                .map_err(|e| ApiError::Other {
                    reason: format!("cannot start the log thread: {e}"),
                })?;
            Some(tx)
        }
    };
    let on = sender.is_some();
    *forward.queue.lock().unwrap_or_else(PoisonError::into_inner) = sender;
    forward
        .level
        .store(if on { rank(level) } else { 0 }, Ordering::Relaxed);
    // Call sites cache whether they are enabled: let them ask again.
    tracing::callsite::rebuild_interest_cache();
    Ok(())
}
