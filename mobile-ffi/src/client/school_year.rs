//! A school's programme year on the phone: teachers log in-school science sessions and
//! expert lectures, teachers or mobile-museum tour staff add tour stops and record who
//! came by scanning pupils' passes offline. Everything goes into the one school log the
//! server creates for each school and year ([`DocumentId::school_log`]), which every
//! device finds without being told.

use std::collections::BTreeSet;

use kepu_sync_core::calendar::{china_week, china_year};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::{PupilId, SchoolId};
use kepu_sync_core::proof::verify_pass;
use kepu_sync_core::schema::school_log::SchoolLog;
use kepu_sync_core::writer::Role;

use super::actions::{new_entry_id, parse_id};
use super::core::{Core, now_ms};
use super::error::{Error, Result};

/// Longest topic or location accepted.
const MAX_TITLE_CHARS: usize = 200;

/// A school's year as the phone sees it (the merged log on this device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchoolYear {
    /// The school log document.
    pub doc: DocumentId,
    /// Calendar year.
    pub year: i64,
    /// In-school science sessions logged.
    pub sessions: u32,
    /// Weeks (7-day weeks from 1 January, China time) with at least one session.
    pub weeks_with_session: u32,
    /// Weeks of the year begun so far (for "n of m weeks"); the whole year once past.
    pub weeks_so_far: u32,
    /// Expert lectures logged.
    pub lectures: u32,
    /// Mobile-museum tour stops at the school.
    pub tour_stops: u32,
    /// Different pupils who attended any tour stop.
    pub pupils_reached: u32,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn check_title(text: &str, what: &str) -> Result<String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_TITLE_CHARS {
        return Err(Error::InvalidInput(format!(
            "{what} must have 1 to {MAX_TITLE_CHARS} characters"
        )));
    }
    Ok(text.to_owned())
}

impl Core {
    /// The school log of `school` (a teacher's own school when `None`) for `year` (this
    /// year in China time when `None`). Marks it wanted, so the next sync fetches it.
    ///
    /// # Errors
    /// No school given and none of this device's own, malformed id, not enrolled.
    pub fn school_log_doc(&self, school: Option<&str>, year: Option<i64>) -> Result<DocumentId> {
        let me = self.require_identity()?;
        let school: SchoolId = match (school, me.school) {
            (Some(text), _) => parse_id(text, "school")?,
            (None, Some(own)) => own,
            (None, None) => return Err(Error::InvalidInput("which school?".into())),
        };
        let year = year.unwrap_or_else(|| china_year(now_ms()));
        if !(2000..=2100).contains(&year) {
            return Err(Error::InvalidInput("year must be 2000 to 2100".into()));
        }
        let doc = DocumentId::school_log(school, year);
        let held = self.read(&doc, SchoolLog::read)?.flatten().is_some();
        if !held {
            self.want(doc)?;
        }
        Ok(doc)
    }

    /// The log of `year` to write into: it must have reached this device once.
    fn log_for_writing(&self, school: Option<&str>, year: i64) -> Result<(DocumentId, SchoolLog)> {
        let doc = self.school_log_doc(school, Some(year))?;
        let log = self
            .read(&doc, SchoolLog::read)?
            .flatten()
            .ok_or(Error::NotSynced("school log"))?;
        Ok((doc, log))
    }

    /// A teacher logs an in-school science session (科学课外活动) held at `at`; returns
    /// its id.
    ///
    /// # Errors
    /// Not a teacher, empty or long topic, minutes not 1–600, the log not yet on this
    /// device, refused by validation.
    pub fn log_science_session(&self, topic: &str, minutes: u32, at: i64) -> Result<String> {
        self.log_teaching(topic, minutes, at, false)
    }

    /// A teacher logs an expert lecture (专家讲座) held at `at`; returns its id.
    ///
    /// # Errors
    /// As [`Core::log_science_session`].
    pub fn log_expert_lecture(&self, topic: &str, minutes: u32, at: i64) -> Result<String> {
        self.log_teaching(topic, minutes, at, true)
    }

    fn log_teaching(&self, topic: &str, minutes: u32, at: i64, lecture: bool) -> Result<String> {
        let me = self.require_identity()?;
        if me.role != Role::Teacher {
            return Err(Error::InvalidInput(
                "only a teacher logs sessions and lectures".into(),
            ));
        }
        let topic = check_title(topic, "the topic")?;
        if minutes == 0 || minutes > 600 {
            return Err(Error::InvalidInput("minutes must be 1 to 600".into()));
        }
        let (doc, _) = self.log_for_writing(None, china_year(at))?;
        let id = new_entry_id(now_ms());
        let edit = if lecture {
            Edit::LogLecture {
                id: id.clone(),
                at,
                topic,
                minutes,
            }
        } else {
            Edit::LogSession {
                id: id.clone(),
                at,
                topic,
                minutes,
            }
        };
        self.edit(doc, edit)?;
        Ok(id)
    }

    /// A teacher or the mobile science museum's staff add a tour stop (流动科技馆巡展)
    /// at a school (the teacher's own when `None`); returns the stop's id.
    ///
    /// # Errors
    /// Not a teacher or venue staff, empty location, days not 1–366, the log not yet on
    /// this device, refused by validation.
    pub fn add_tour_stop(
        &self,
        school: Option<&str>,
        location: &str,
        days: u32,
        at: i64,
    ) -> Result<String> {
        let me = self.require_identity()?;
        if !matches!(me.role, Role::Teacher | Role::VenueStaff) {
            return Err(Error::InvalidInput(
                "only teachers and tour staff add tour stops".into(),
            ));
        }
        let location = check_title(location, "the location")?;
        if days == 0 || days > 366 {
            return Err(Error::InvalidInput("days must be 1 to 366".into()));
        }
        let (doc, _) = self.log_for_writing(school, china_year(at))?;
        let id = new_entry_id(now_ms());
        self.edit(
            doc,
            Edit::AddTourStop {
                id: id.clone(),
                at,
                location,
                days,
            },
        )?;
        Ok(id)
    }

    /// Records that the pupil whose pass was scanned attended a tour stop. The pass is
    /// verified offline (signature, expiry, the synced revocation list) and must be of the
    /// log's school. Returns whether the pupil was already recorded at this stop.
    ///
    /// # Errors
    /// A forged, expired or revoked pass, another school's pupil, an unknown stop, the log
    /// not on this device.
    pub fn record_tour_attendance(
        &self,
        school: Option<&str>,
        stop_id: &str,
        pass: &str,
    ) -> Result<bool> {
        let me = self.require_identity()?;
        if !matches!(me.role, Role::Teacher | Role::VenueStaff) {
            return Err(Error::InvalidInput(
                "only teachers and tour staff record tour attendance".into(),
            ));
        }
        let key = self
            .server_key()
            .ok_or_else(|| Error::InvalidInput("no server public key configured".into()))?;
        let revoked = self.revocations()?;
        let proof = verify_pass(pass.trim(), &key, now_ms(), &|p, s| {
            revoked.is_revoked(p, s)
        })
        .map_err(|e| Error::InvalidInput(format!("pupil pass: {e}")))?;
        let stop_year = self.stop_year(school, stop_id)?;
        let (doc, log) = self.log_for_writing(school, stop_year)?;
        if proof.school != log.school {
            return Err(Error::InvalidInput(
                "this pass belongs to a pupil of another school".into(),
            ));
        }
        let already = log
            .tour_attendance
            .get(stop_id)
            .is_some_and(|pupils| pupils.contains(&proof.pupil));
        self.edit(
            doc,
            Edit::TourAttendance {
                stop: stop_id.to_owned(),
                pupil: proof.pupil,
            },
        )?;
        Ok(already)
    }

    /// The year of the log holding tour stop `stop_id` (this year's or last year's log).
    fn stop_year(&self, school: Option<&str>, stop_id: &str) -> Result<i64> {
        let this_year = china_year(now_ms());
        for year in [this_year, this_year - 1] {
            let doc = self.school_log_doc(school, Some(year))?;
            if let Some(Some(log)) = self.read(&doc, SchoolLog::read)?
                && log.tour_stops.iter().any(|s| s.id == stop_id)
            {
                return Ok(year);
            }
        }
        Err(Error::InvalidInput(
            "no such tour stop on this device".into(),
        ))
    }

    /// A school's year as merged on this device (the teacher's own school when `None`).
    ///
    /// # Errors
    /// Malformed id; the log not yet on this device ([`Error::NotSynced`]).
    pub fn school_year(&self, school: Option<&str>, year: Option<i64>) -> Result<SchoolYear> {
        let doc = self.school_log_doc(school, year)?;
        let log = self
            .read(&doc, SchoolLog::read)?
            .flatten()
            .ok_or(Error::NotSynced("school log"))?;
        let now = now_ms();
        let (this_year, this_week) = china_week(now);
        let weeks_so_far = match log.year.cmp(&this_year) {
            std::cmp::Ordering::Less => 53,
            std::cmp::Ordering::Equal => this_week + 1,
            std::cmp::Ordering::Greater => 0,
        };
        let weeks: BTreeSet<i64> = log
            .sessions
            .iter()
            .map(|s| china_week(s.at))
            .filter(|(y, _)| *y == log.year)
            .map(|(_, w)| w)
            .collect();
        let pupils: BTreeSet<PupilId> = log.tour_attendance.values().flatten().copied().collect();
        Ok(SchoolYear {
            doc,
            year: log.year,
            sessions: count(log.sessions.len()),
            weeks_with_session: count(weeks.len()),
            weeks_so_far: u32::try_from(weeks_so_far).unwrap_or(0),
            lectures: count(log.lectures.len()),
            tour_stops: count(log.tour_stops.len()),
            pupils_reached: count(pupils.len()),
        })
    }
}
