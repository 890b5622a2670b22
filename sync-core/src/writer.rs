//! Who is writing: the identity a device authenticated with, as the engine and the
//! validation rules see it.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, PupilId, SchoolId, UserId, VenueId};

/// A user's role. The server's own changes (booking decisions, revocations) carry
/// [`Role::Server`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A pupil with the app on their own phone.
    Pupil,
    /// A junior science volunteer (小小科普辅导员).
    Volunteer,
    /// A teacher of one school.
    Teacher,
    /// Staff of one venue (gate tablets are venue staff devices).
    VenueStaff,
    /// An education bureau or science association analyst.
    BureauAdmin,
    /// The kepu server itself.
    Server,
}

impl Role {
    /// The stable text form used in documents, tokens and the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pupil => "pupil",
            Self::Volunteer => "volunteer",
            Self::Teacher => "teacher",
            Self::VenueStaff => "venue_staff",
            Self::BureauAdmin => "bureau_admin",
            Self::Server => "server",
        }
    }

    /// Parses [`Role::as_str`]'s output (dashes are accepted for underscores).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.replace('-', "_").as_str() {
            "pupil" => Self::Pupil,
            "volunteer" => Self::Volunteer,
            "teacher" => Self::Teacher,
            "venue_staff" => Self::VenueStaff,
            "bureau_admin" => Self::BureauAdmin,
            "server" => Self::Server,
            _ => return None,
        })
    }
}

/// The identity behind a change: one device of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// The device install that made the change.
    pub device: DeviceId,
    /// The user the device is enrolled for.
    pub user: UserId,
    /// The user's role.
    pub role: Role,
    /// The school of a pupil, volunteer or teacher.
    pub school: Option<SchoolId>,
    /// The venue of venue staff.
    pub venue: Option<VenueId>,
    /// The pseudonymous pupil id of a pupil.
    pub pupil: Option<PupilId>,
}

impl Writer {
    /// The server's own identity.
    #[must_use]
    pub fn server(device: DeviceId) -> Self {
        Self {
            device,
            user: UserId(device.0),
            role: Role::Server,
            school: None,
            venue: None,
            pupil: None,
        }
    }
}
