//! Who may watch a venue's dashboard and see pupils' names, and how pupils and devices
//! are shown otherwise (pseudonyms and short ids, never a person).

use uuid::Uuid;

use crate::accounts::Role;

/// Who is looking at a dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// Their role.
    pub role: Role,
    /// Their venue (venue staff).
    pub venue_id: Option<Uuid>,
}

/// May `viewer` watch the dashboard of `venue`? Its own staff and bureau administrators.
#[must_use]
pub fn may_watch(viewer: Viewer, venue: Uuid) -> bool {
    match viewer.role {
        Role::BureauAdmin => true,
        Role::VenueStaff => viewer.venue_id == Some(venue),
        Role::Pupil | Role::Volunteer | Role::Teacher | Role::Server => false,
    }
}

/// May `viewer` see the display names schools chose for their pupils on the dashboard of
/// `venue`? The venue's own staff (they call the missing pupils at the gate) and bureau
/// administrators; everyone else sees pseudonyms.
#[must_use]
pub fn may_see_names(viewer: Viewer, venue: Uuid) -> bool {
    may_watch(viewer, venue)
}

/// A short pseudonym for a pupil: `#` and the last six hex digits of the pupil id (the
/// random part of the uuid). Not secret, only not a name.
#[must_use]
pub fn pseudonym(pupil: &str) -> String {
    let mut out = String::with_capacity(7);
    out.push('#');
    push_last_hex(&mut out, pupil);
    out
}

/// A short device id: the last six hex digits of its uuid.
#[must_use]
pub fn short_device(device: &str) -> String {
    let mut out = String::with_capacity(6);
    push_last_hex(&mut out, device);
    out
}

/// Appends the last six hex digits of `id`, in their order (a dashboard labels every
/// missing pupil with one, at every refresh).
fn push_last_hex(out: &mut String, id: &str) {
    let digits = id.bytes().filter(u8::is_ascii_hexdigit).count();
    out.extend(
        id.chars()
            .filter(char::is_ascii_hexdigit)
            .skip(digits.saturating_sub(6)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_and_short_ids_carry_no_name() {
        assert_eq!(pseudonym("0192f0c4-7a1b-7c3d-8e4f-5a6b7c8d9e0f"), "#8d9e0f");
        assert_eq!(
            short_device("0192f0c4-7a1b-7c3d-8e4f-5a6b7c8d9e0f"),
            "8d9e0f"
        );
        assert_eq!(pseudonym("ab"), "#ab");
    }
}
