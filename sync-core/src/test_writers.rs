//! The writers, places and time that the unit tests of `edits` and `validate` share.

use uuid::Uuid;

use automerge::Automerge;

use crate::edits::{Edit, apply_unchecked};
use crate::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use crate::writer::{Role, Writer};

/// 2026-01-01 00:00 UTC.
pub(crate) const NOW: i64 = 1_767_225_600_000;
pub(crate) const SCHOOL: SchoolId = SchoolId(Uuid::from_u128(1));
pub(crate) const VENUE: VenueId = VenueId(Uuid::from_u128(2));
pub(crate) const SLOT: SlotId = SlotId(Uuid::from_u128(3));

pub(crate) fn pupil(n: u128) -> PupilId {
    PupilId(Uuid::from_u128(300 + n))
}

/// Writer `n` of `role`, affiliated with [`SCHOOL`] or [`VENUE`] as its role needs.
pub(crate) fn writer(n: u128, role: Role) -> Writer {
    Writer {
        device: DeviceId(Uuid::from_u128(100 + n)),
        user: UserId(Uuid::from_u128(200 + n)),
        role,
        school: matches!(role, Role::Teacher | Role::Volunteer | Role::Pupil).then_some(SCHOOL),
        venue: (role == Role::VenueStaff).then_some(VENUE),
        pupil: (role == Role::Pupil).then_some(pupil(n)),
    }
}

pub(crate) fn teacher() -> Writer {
    writer(1, Role::Teacher)
}

pub(crate) fn staff() -> Writer {
    writer(2, Role::VenueStaff)
}

pub(crate) fn volunteer() -> Writer {
    writer(3, Role::Volunteer)
}

pub(crate) fn server() -> Writer {
    Writer::server(DeviceId(Uuid::from_u128(9)))
}

/// A booking of [`SLOT`] for `roster`, made by the [`teacher`] at [`NOW`].
pub(crate) fn booking_for(roster: Vec<PupilId>) -> Automerge {
    let mut doc = Automerge::new();
    let edit = Edit::CreateBooking {
        venue: VENUE,
        slot: SLOT,
        school: SCHOOL,
        party_size: u32::try_from(roster.len()).expect("a small roster"),
        roster,
    };
    apply_unchecked(&mut doc, &teacher(), NOW, &edit).expect("the booking is created");
    doc
}
