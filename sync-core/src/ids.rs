//! Identifier newtypes. Every entity id is a UUID; in documents it is stored as its
//! hyphenated text form so that any automerge client (JavaScript included) reads it as a
//! string.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// An id that is not a well-formed UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind} id")]
pub struct BadId {
    /// Which kind of id was expected (`pupil`, `device`, …).
    pub kind: &'static str,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Builds the id from 16 raw bytes.
            #[must_use]
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }

            /// The 16 raw bytes.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// A UUID v7 built from a time (unix milliseconds) and 10 random bytes, both
            /// supplied by the caller (the core owns no clock and no randomness).
            #[must_use]
            pub fn new_v7(unix_ms: i64, random: [u8; 10]) -> Self {
                Self(crate::ids::uuid_v7(unix_ms, random))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                Uuid::parse_str(s).map(Self).map_err(|_| BadId { kind: $kind })
            }
        }
    };
}

uuid_id!(
    /// A pupil's pseudonymous id. It carries no name; the school keeps the mapping.
    PupilId,
    "pupil"
);
uuid_id!(
    /// One enrolled device install (phone, gate tablet).
    DeviceId,
    "device"
);
uuid_id!(
    /// A user account (teacher, venue staff, volunteer, bureau admin, pupil).
    UserId,
    "user"
);
uuid_id!(
    /// A school.
    SchoolId,
    "school"
);
uuid_id!(
    /// A science venue (科普场所).
    VenueId,
    "venue"
);
uuid_id!(
    /// A bookable slot of a venue.
    SlotId,
    "slot"
);
uuid_id!(
    /// An entry inside a document (activity, session, lecture, tour stop, note).
    EntryId,
    "entry"
);

/// Builds a UUID v7 from unix milliseconds and caller-supplied random bytes.
#[must_use]
pub fn uuid_v7(unix_ms: i64, random: [u8; 10]) -> Uuid {
    let ms = u64::try_from(unix_ms.max(0)).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let id = PupilId::new_v7(1_700_000_000_000, [7; 10]);
        let text = id.to_string();
        assert_eq!(text.parse::<PupilId>().unwrap(), id);
        assert_eq!(id.0.get_version_num(), 7);
    }

    #[test]
    fn malformed_id_names_its_kind_only() {
        let err = "Zhang San".parse::<PupilId>().unwrap_err();
        assert_eq!(err.to_string(), "malformed pupil id");
    }
}
