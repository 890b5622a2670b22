//! Revoked pupil passes. The list itself is synced as a document by another module;
//! this is the in-memory form a scanner checks against.

use std::collections::BTreeSet;

use crate::ids::PupilId;

/// The set of revoked passes, each named by (pupil, serial).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RevocationList {
    revoked: BTreeSet<(PupilId, u32)>,
}

impl RevocationList {
    /// An empty list.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes one pass; returns whether it was not revoked before.
    pub fn revoke(&mut self, pupil: PupilId, serial: u32) -> bool {
        self.revoked.insert((pupil, serial))
    }

    /// Whether the pass (pupil, serial) is revoked. Use as the `revoked` closure of
    /// [`super::verify_pass`]: `&|p, s| list.is_revoked(p, s)`.
    #[must_use]
    pub fn is_revoked(&self, pupil: PupilId, serial: u32) -> bool {
        self.revoked.contains(&(pupil, serial))
    }

    /// Number of revoked passes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// Whether no pass is revoked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// The revoked passes, in order.
    pub fn iter(&self) -> impl Iterator<Item = (PupilId, u32)> + '_ {
        self.revoked.iter().copied()
    }
}

impl FromIterator<(PupilId, u32)> for RevocationList {
    fn from_iter<I: IntoIterator<Item = (PupilId, u32)>>(iter: I) -> Self {
        Self {
            revoked: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_serial_is_revoked_and_others_are_not() {
        let a = PupilId::from_bytes([1; 16]);
        let b = PupilId::from_bytes([2; 16]);
        let mut list = RevocationList::new();
        assert!(list.is_empty());
        assert!(list.revoke(a, 1));
        assert!(!list.revoke(a, 1));
        assert!(list.is_revoked(a, 1));
        assert!(!list.is_revoked(a, 2));
        assert!(!list.is_revoked(b, 1));
        assert_eq!(list.len(), 1);
        assert_eq!(list.iter().collect::<Vec<_>>(), vec![(a, 1)]);
    }

    #[test]
    fn list_round_trips_through_json() {
        let list: RevocationList = [(PupilId::from_bytes([1; 16]), 7)].into_iter().collect();
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(serde_json::from_str::<RevocationList>(&json).unwrap(), list);
    }
}
