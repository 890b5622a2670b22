//! Limits per client address, device and login that keep one client from wearing the
//! server down: counters of failed attempts with a lock ([`AttemptLimiter`]) and counters
//! of open connections ([`OpenCounter`]). Both are in memory and bounded in size.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

/// The address a request came from, as the key of per-address limits: an IPv4 address,
/// or the /64 prefix of an IPv6 address (one subscriber's network). `None` when the
/// request did not come over a socket (in-process tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    /// The key for `ip`: IPv4 as is (also when mapped into IPv6), IPv6 cut to its /64.
    #[must_use]
    pub fn of(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut octets = v6.octets();
                    octets[8..].fill(0);
                    IpAddr::from(octets)
                }
            },
            v4 @ IpAddr::V4(_) => v4,
        };
        Self(Some(ip))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(Self(None), |ConnectInfo(peer)| Self::of(peer.ip())))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    /// Attempts counted that have not succeeded.
    count: u32,
    /// Locked until then (unix ms); 0 when not locked.
    locked_until: i64,
    /// The last attempt (unix ms).
    last: i64,
}

/// Why an attempt may not go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This key has used its attempts and is locked for a while.
    Locked,
    /// The limiter tracks as many keys as it may; new keys wait until old ones expire.
    Full,
}

/// Counts attempts per key: after `max` attempts that did not succeed, the next one is
/// refused and the key is locked for `lock_ms`.
///
/// An attempt is counted when it starts ([`AttemptLimiter::begin`]), under one lock, so
/// that parallel attempts cannot all pass the check before any of them is counted; a
/// success gives its count back ([`AttemptLimiter::succeeded`]) but never lifts a lock.
/// A key is forgotten `forget_after_ms` after its last attempt once unlocked. At most
/// `capacity` keys are kept; while that many are live a new key is refused rather than an
/// old one dropped (dropping it would unlock it).
#[derive(Debug, Clone)]
pub struct AttemptLimiter<K> {
    tallies: Arc<Mutex<HashMap<K, Tally>>>,
    max: u32,
    lock_ms: i64,
    forget_after_ms: i64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> AttemptLimiter<K> {
    /// A limiter allowing `max` unsuccessful attempts per key; `max == 0` never refuses.
    #[must_use]
    pub fn new(max: u32, lock_ms: i64, forget_after_ms: i64, capacity: usize) -> Self {
        Self {
            tallies: Arc::new(Mutex::new(HashMap::new())),
            max,
            lock_ms,
            forget_after_ms,
            capacity,
        }
    }

    /// Counts an attempt for `key` at `now`.
    ///
    /// # Errors
    /// [`Refused::Locked`] if the key is locked or has used its attempts (which locks
    /// it), [`Refused::Full`] if it is new and the limiter is full.
    pub fn begin(&self, key: &K, now: i64) -> Result<(), Refused> {
        if self.max == 0 {
            return Ok(());
        }
        let mut tallies = lock(&self.tallies);
        if !tallies.contains_key(key) && tallies.len() >= self.capacity {
            let forget = self.forget_after_ms;
            tallies.retain(|_, t| t.locked_until > now || t.last + forget > now);
            if tallies.len() >= self.capacity {
                return Err(Refused::Full);
            }
        }
        let t = tallies.entry(key.clone()).or_insert(Tally {
            count: 0,
            locked_until: 0,
            last: now,
        });
        if t.locked_until > now {
            return Err(Refused::Locked);
        }
        if t.locked_until != 0 || t.last + self.forget_after_ms <= now {
            t.count = 0;
            t.locked_until = 0;
        }
        t.last = now;
        if t.count >= self.max {
            t.locked_until = now + self.lock_ms;
            return Err(Refused::Locked);
        }
        t.count += 1;
        Ok(())
    }

    /// The attempt begun for `key` succeeded: it does not count.
    pub fn succeeded(&self, key: &K) {
        if let Some(t) = lock(&self.tallies).get_mut(key) {
            t.count = t.count.saturating_sub(1);
        }
    }

    /// Forgets `key` (a correct password clears its name's failures).
    pub fn forget(&self, key: &K) {
        lock(&self.tallies).remove(key);
    }

    /// Keys tracked now.
    #[must_use]
    pub fn len(&self) -> usize {
        lock(&self.tallies).len()
    }

    /// Whether no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts open connections (or streams) per key, at most `max` each.
#[derive(Debug, Clone)]
pub struct OpenCounter<K: Hash + Eq> {
    open: Arc<Mutex<HashMap<K, usize>>>,
    max: usize,
}

/// One counted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct OpenSlot<K: Hash + Eq + Clone> {
    counter: OpenCounter<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> OpenCounter<K> {
    /// A counter allowing `max` open connections per key.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::new(Mutex::new(HashMap::new())),
            max,
        }
    }

    /// The most connections one key may hold.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a place for `key`, or `None` if it already holds `max`.
    #[must_use]
    pub fn open(&self, key: K) -> Option<OpenSlot<K>> {
        let mut open = lock(&self.open);
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        drop(open);
        Some(OpenSlot {
            counter: self.clone(),
            key,
        })
    }

    /// Connections `key` holds now.
    #[must_use]
    pub fn count(&self, key: &K) -> usize {
        lock(&self.open).get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for OpenSlot<K> {
    fn drop(&mut self) {
        let mut open = lock(&self.counter.open);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_lock_after_the_limit_and_successes_do_not_count() {
        let l = AttemptLimiter::new(3, 100, 1_000, 10);
        assert!(l.begin(&"a", 0).is_ok());
        l.succeeded(&"a");
        for at in 1..=3 {
            assert!(l.begin(&"a", at).is_ok());
        }
        // Three attempts in flight or failed: the fourth is refused and locks the key.
        assert_eq!(l.begin(&"a", 4), Err(Refused::Locked));
        // A success of one in flight gives its count back but does not lift the lock.
        l.succeeded(&"a");
        assert_eq!(l.begin(&"a", 50), Err(Refused::Locked));
        assert!(l.begin(&"a", 104).is_ok());
        // Unused keys are forgotten after a while.
        assert!(l.begin(&"b", 0).is_ok());
        assert!(l.begin(&"b", 0).is_ok());
        assert!(l.begin(&"b", 0).is_ok());
        assert!(l.begin(&"b", 2_000).is_ok());
    }

    #[test]
    fn the_limiter_never_holds_more_than_its_capacity() {
        let l = AttemptLimiter::new(2, 100, 1_000, 3);
        for k in 0..3 {
            assert!(l.begin(&k, 0).is_ok());
            assert!(l.begin(&k, 0).is_ok());
            assert_eq!(l.begin(&k, 0), Err(Refused::Locked));
        }
        // Three locked keys: a fourth is refused, the locked ones stay locked.
        assert_eq!(l.begin(&3, 10), Err(Refused::Full));
        assert_eq!(l.len(), 3);
        assert_eq!(l.begin(&0, 10), Err(Refused::Locked));
        // Once they expire there is room again.
        assert!(l.begin(&3, 1_200).is_ok());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn open_slots_are_given_back_when_dropped() {
        let c = OpenCounter::new(2);
        let a = c.open(1).unwrap();
        let _b = c.open(1).unwrap();
        assert!(c.open(1).is_none());
        assert!(c.open(2).is_some());
        drop(a);
        assert_eq!(c.count(&1), 1);
        assert!(c.open(1).is_some());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_network() {
        let a = ClientAddr::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientAddr::of("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = ClientAddr::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = ClientAddr::of("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped, ClientAddr::of("10.0.0.1".parse().unwrap()));
    }
}
