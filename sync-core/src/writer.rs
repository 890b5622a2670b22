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

impl Role {
    /// The roles a user can have (every role but [`Role::Server`]).
    pub const USERS: [Self; 5] = [
        Self::Pupil,
        Self::Volunteer,
        Self::Teacher,
        Self::VenueStaff,
        Self::BureauAdmin,
    ];

    /// Whether a user can have this role (the server's own role is not one).
    #[must_use]
    pub const fn is_user(self) -> bool {
        !matches!(self, Self::Server)
    }

    /// Parses the role of a user (from a request, the admin command line or a stored
    /// row): one of [`Role::USERS`], surrounding spaces ignored, dashes accepted for
    /// underscores.
    ///
    /// # Errors
    /// [`UnknownRole`] for any other text, `server` included.
    pub fn parse_user(text: &str) -> Result<Self, UnknownRole> {
        Self::parse(text.trim())
            .filter(|r| r.is_user())
            .ok_or(UnknownRole)
    }

    /// Deserializes the role of a user, refusing `server` (for
    /// `#[serde(deserialize_with = "Role::deserialize_user")]`).
    ///
    /// # Errors
    /// Not a string, or not the name of a user's role.
    pub fn deserialize_user<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse_user(&text).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one a user can have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role (expected pupil, volunteer, teacher, venue_staff or bureau_admin)")]
pub struct UnknownRole;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_reads_back_from_its_text() {
        for role in Role::USERS.into_iter().chain([Role::Server]) {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(role.to_string(), role.as_str());
        }
        assert_eq!(Role::parse_user(" venue-staff "), Ok(Role::VenueStaff));
    }

    #[test]
    fn a_user_is_never_the_server() {
        assert_eq!(Role::parse_user("server"), Err(UnknownRole));
        assert_eq!(Role::parse_user("admin"), Err(UnknownRole));
        let json = serde_json::json!({ "role": "server" });
        #[derive(Debug, serde::Deserialize)]
        struct Request {
            #[serde(deserialize_with = "Role::deserialize_user")]
            role: Role,
        }
        assert!(serde_json::from_value::<Request>(json).is_err());
        let ok: Request = serde_json::from_value(serde_json::json!({ "role": "teacher" })).unwrap();
        assert_eq!(ok.role, Role::Teacher);
    }
}
