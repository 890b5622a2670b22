//! `--demo`: a year of sample programme activity so the reports are not empty. For the
//! sample schools (names carrying [`MARK`](crate::demo::MARK)) the server writes, through
//! the same hub path as its other documents: into each school's log for this year (the one
//! [`sync::documents::ensure`](crate::sync::documents::ensure) creates) sessions on most
//! weeks, an expert lecture and a mobile-museum tour stop with attendance; a past slot at
//! the first sample venue with a booking and check-ins; and the sample volunteer's
//! activities, confirmed; and today a class of the first sample school at the sample venue
//! staff's venue, six of ten arrived, for the live dashboard. A school log that already has sessions and documents that
//! already exist are left alone, so a restart adds nothing twice.

use std::collections::HashSet;

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::{PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::schema::booking::ScanMethod;

use crate::demo::MARK;
use crate::error::Result;
use crate::ids::stable_id;
use crate::reports::{UTC_OFFSET_MS, china_day, civil_from_days, days_from_civil};
use crate::store::Store;
use crate::sync::SyncHub;
use crate::sync::documents::venue_doc;

const DAY: i64 = 86_400_000;

fn doc_for(label: &str) -> DocumentId {
    DocumentId::from_bytes(*stable_id(label).as_bytes())
}

fn entry_id(label: &str) -> String {
    stable_id(label).to_string()
}

/// 15:30 China time on a day number.
const fn afternoon(day: i64) -> i64 {
    day * DAY - UTC_OFFSET_MS + 15 * 3_600_000 + 30 * 60_000
}

/// Writes the sample activity of this year (China time at `now`) that does not exist
/// yet. Returns the number of documents created.
///
/// # Errors
/// A database failure.
#[allow(clippy::too_many_lines)]
pub async fn seed(store: &Store, hub: &SyncHub, now: i64) -> Result<usize> {
    let existing: HashSet<DocumentId> = store
        .document_ids()
        .await?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let schools = store.schools_marked(MARK).await?;
    let venue = store.venues_marked(MARK).await?.into_iter().next();
    let today = china_day(now);
    let (year, _, _) = civil_from_days(today);
    let first_day = days_from_civil(year, 1, 1);
    let weeks = (today - first_day) / 7 + 1;
    let mut created = 0;

    for (n, school) in schools.iter().enumerate() {
        let pupils: Vec<PupilId> = store
            .pupils_of_school(*school)
            .await?
            .into_iter()
            .map(PupilId)
            .collect();
        let log = DocumentId::school_log(SchoolId(*school), year);
        let logged = store.school_session_count(*school).await?;
        // `ensure` has queued the log's creation (the hub runs edits in order).
        if logged == 0 {
            // School 1 skips two weeks, school 2 every third week, school 3 logs only
            // every other week.
            for w in 0..weeks {
                let skip = match n {
                    0 => w == 3 || w == 4,
                    1 => w % 3 == 2,
                    _ => w % 2 == 1,
                };
                if skip {
                    continue;
                }
                let day = (first_day + w * 7 + 2).min(today);
                hub.edit(
                    log,
                    Edit::LogSession {
                        id: entry_id(&format!("demo/session/{school}/{year}/{w}")),
                        at: afternoon(day),
                        topic: "科学小实验（示例）".into(),
                        minutes: 40,
                    },
                );
            }
            if n < 2 {
                hub.edit(
                    log,
                    Edit::LogLecture {
                        id: entry_id(&format!("demo/lecture/{school}/{year}")),
                        at: afternoon((first_day + 40).min(today)),
                        topic: "科学家进校园（示例）".into(),
                        minutes: 90,
                    },
                );
            }
            if n != 1 {
                let stop = entry_id(&format!("demo/tour-stop/{school}/{year}"));
                hub.edit(
                    log,
                    Edit::AddTourStop {
                        id: stop.clone(),
                        at: afternoon((first_day + 60).min(today)),
                        location: "学校操场（示例）".into(),
                        days: 2,
                    },
                );
                // The first school reaches 7 in 10 pupils, the others all.
                let reached = if n == 0 {
                    pupils.len() * 7 / 10
                } else {
                    pupils.len()
                };
                for pupil in &pupils[..reached] {
                    hub.edit(
                        log,
                        Edit::TourAttendance {
                            stop: stop.clone(),
                            pupil: *pupil,
                        },
                    );
                }
            }
            created += 1;
        }

        // The first two schools visited the first sample venue two weeks ago.
        if let Some(venue) = venue.filter(|_| n < 2) {
            let booking = doc_for(&format!("demo/booking/{school}/{year}"));
            if existing.contains(&booking) || pupils.is_empty() {
                continue;
            }
            let day = (today - 14).max(first_day);
            let slot = SlotId(stable_id(&format!("demo/past-slot/{venue}/{year}/{n}")));
            let start = afternoon(day);
            hub.edit(
                venue_doc(VenueId(venue)),
                Edit::PutSlot {
                    slot,
                    start,
                    end: start + 2 * 3_600_000,
                    capacity: 60,
                    label: format!("课后 {} 15:30（示例）", crate::reports::format_date(day)),
                },
            );
            let roster: Vec<PupilId> = pupils.iter().take(8).copied().collect();
            hub.edit(
                booking,
                Edit::CreateBooking {
                    venue: VenueId(venue),
                    slot,
                    school: SchoolId(*school),
                    party_size: u32::try_from(roster.len()).unwrap_or(1),
                    roster: roster.clone(),
                },
            );
            for (i, pupil) in roster.iter().enumerate().take(6) {
                hub.edit(
                    booking,
                    Edit::CheckIn {
                        pupil: *pupil,
                        scan_id: entry_id(&format!("demo/scan/{school}/{year}/{i}")),
                        method: ScanMethod::Manual,
                        proof: None,
                    },
                );
            }
            created += 1;
        }
    }

    // Today, a class of the first sample school is at the sample venue staff's venue: the
    // live dashboard (`/venues/<venue>/live`) shows six of ten arrived, one scanned twice.
    let staff_venue = store
        .user(stable_id("demo/venue-staff"))
        .await?
        .and_then(|u| u.venue_id);
    if let (Some(school), Some(venue)) = (schools.first(), staff_venue) {
        let booking = doc_for(&format!("demo/today-booking/{school}/{today}"));
        if !existing.contains(&booking) {
            let pupils: Vec<PupilId> = store
                .current_pupils_of_school(*school)
                .await?
                .into_iter()
                .map(PupilId)
                .take(10)
                .collect();
            if !pupils.is_empty() {
                let slot = SlotId(stable_id(&format!("demo/today-slot/{venue}/{today}")));
                // An hour ago, but never before today began (China time), so that the
                // class is on today's dashboard in the first hour after midnight too.
                let start = (now - 3_600_000)
                    .max(kepu_sync_core::calendar::china_day_start(china_day(now)));
                hub.edit(
                    venue_doc(VenueId(venue)),
                    Edit::PutSlot {
                        slot,
                        start,
                        end: start + 4 * 3_600_000,
                        capacity: 60,
                        label: "今日参观（示例）".into(),
                    },
                );
                hub.edit(
                    booking,
                    Edit::CreateBooking {
                        venue: VenueId(venue),
                        slot,
                        school: SchoolId(*school),
                        party_size: u32::try_from(pupils.len()).unwrap_or(1),
                        roster: pupils.clone(),
                    },
                );
                // Booked weeks ago: decided before anyone arrives.
                hub.edit(
                    booking,
                    Edit::Decide {
                        status: kepu_sync_core::schema::booking::Status::Confirmed,
                        wait_position: None,
                    },
                );
                let scans = pupils.iter().take(6).chain(pupils.first());
                for (i, pupil) in scans.enumerate() {
                    hub.edit(
                        booking,
                        Edit::CheckIn {
                            pupil: *pupil,
                            scan_id: entry_id(&format!("demo/today-scan/{school}/{today}/{i}")),
                            method: ScanMethod::Manual,
                            proof: None,
                        },
                    );
                }
                created += 1;
            }
        }
    }

    // The sample volunteer's activities at the first venue, confirmed by the server.
    let volunteers = store.volunteers_marked(MARK).await?;
    if let (Some(volunteer), Some(venue)) = (volunteers.first(), venue) {
        let school = store.user(*volunteer).await?.and_then(|u| u.school_id);
        let doc = doc_for(&format!("demo/activity-log/{volunteer}/{year}"));
        if !existing.contains(&doc) {
            hub.edit(
                doc,
                Edit::CreateActivityLog {
                    volunteer: UserId(*volunteer),
                    school: school.map(SchoolId),
                },
            );
            for (k, (back, minutes)) in [(30, 120u32), (20, 90), (10, 60)].iter().enumerate() {
                let id = entry_id(&format!("demo/activity/{volunteer}/{year}/{k}"));
                hub.edit(
                    doc,
                    Edit::LogActivity {
                        activity_id: id.clone(),
                        venue: VenueId(venue),
                        activity_kind: "展厅讲解".into(),
                        start: afternoon((today - back).max(first_day)),
                        minutes: *minutes,
                        description: "小小科普辅导员（示例）".into(),
                    },
                );
                if k < 2 {
                    hub.edit(
                        doc,
                        Edit::ConfirmActivity {
                            activity_id: id,
                            approved: true,
                            minutes: None,
                        },
                    );
                }
            }
            created += 1;
        }
    }
    Ok(created)
}
