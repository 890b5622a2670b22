//! The roles a user can have.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a user is in the programme; decides what their devices may read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A pupil (pseudonymous id; the school chooses a display name).
    Pupil,
    /// A junior science volunteer (小小科普辅导员).
    Volunteer,
    /// A teacher of a school.
    Teacher,
    /// Staff of a venue.
    VenueStaff,
    /// An education bureau or science association administrator.
    BureauAdmin,
}

/// A role name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role (expected pupil, volunteer, teacher, venue_staff or bureau_admin)")]
pub struct UnknownRole;

impl Role {
    /// The stored name (`venue_staff`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pupil => "pupil",
            Self::Volunteer => "volunteer",
            Self::Teacher => "teacher",
            Self::VenueStaff => "venue_staff",
            Self::BureauAdmin => "bureau_admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownRole;

    /// Accepts `venue_staff` and `venue-staff` alike.
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        match s.trim().replace('-', "_").as_str() {
            "pupil" => Ok(Self::Pupil),
            "volunteer" => Ok(Self::Volunteer),
            "teacher" => Ok(Self::Teacher),
            "venue_staff" => Ok(Self::VenueStaff),
            "bureau_admin" => Ok(Self::BureauAdmin),
            _ => Err(UnknownRole),
        }
    }
}

impl From<Role> for kepu_sync_core::writer::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::Pupil => Self::Pupil,
            Role::Volunteer => Self::Volunteer,
            Role::Teacher => Self::Teacher,
            Role::VenueStaff => Self::VenueStaff,
            Role::BureauAdmin => Self::BureauAdmin,
        }
    }
}
