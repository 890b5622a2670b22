//! The records API: bookings per school and venue, attendance per booking and per
//! venue-day, volunteer hours. Teachers see their school, venue staff their venue,
//! bureau administrators everything.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::ApiJson;
use super::auth::AuthenticatedDevice;
use crate::accounts::{DeviceIdentity, Role};
use crate::app_state::AppState;
use crate::error::{Error, Result};
use crate::store::{BookingAttendance, BookingRow, VolunteerHours};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/bookings", get(bookings))
        .route("/api/bookings/{doc}/attendance", get(booking_attendance))
        .route("/api/venues/{venue}/attendance", get(venue_day))
        .route("/api/volunteers/hours", get(volunteer_hours))
}

#[derive(Debug, Deserialize)]
struct Filter {
    school: Option<String>,
    venue: Option<String>,
    day: Option<String>,
}

/// The school and venue filters a device is held to.
fn scope(id: &DeviceIdentity, f: &Filter) -> Result<(Option<String>, Option<String>)> {
    match id.writer.role {
        Role::BureauAdmin => Ok((f.school.clone(), f.venue.clone())),
        Role::Teacher => Ok((id.writer.school.map(|s| s.to_string()), f.venue.clone())),
        Role::VenueStaff => Ok((f.school.clone(), id.writer.venue.map(|v| v.to_string()))),
        _ => Err(Error::Forbidden(
            "only teachers, venue staff and bureau administrators read records",
        )),
    }
}

fn may_see(id: &DeviceIdentity, b: &BookingRow) -> bool {
    match id.writer.role {
        Role::BureauAdmin => true,
        Role::Teacher => id
            .writer
            .school
            .is_some_and(|s| s.to_string() == b.school_id),
        Role::VenueStaff => id.writer.venue.is_some_and(|v| v.to_string() == b.venue_id),
        _ => false,
    }
}

#[derive(Serialize)]
struct Bookings {
    bookings: Vec<BookingRow>,
}

async fn bookings(
    State(state): State<AppState>,
    AuthenticatedDevice(id): AuthenticatedDevice,
    Query(f): Query<Filter>,
) -> Result<ApiJson<Bookings>> {
    let (school, venue) = scope(&id, &f)?;
    Ok(ApiJson(Bookings {
        bookings: state
            .store
            .bookings(school.as_deref(), venue.as_deref())
            .await?,
    }))
}

async fn booking_attendance(
    State(state): State<AppState>,
    AuthenticatedDevice(id): AuthenticatedDevice,
    Path(doc): Path<String>,
) -> Result<ApiJson<BookingAttendance>> {
    // One snapshot: the counts in the booking's row agree with the scans beside them.
    state
        .store
        .booking_attendance(&doc)
        .await?
        .filter(|a| may_see(&id, &a.booking))
        .map(ApiJson)
        .ok_or_else(|| Error::not_found("booking", &doc))
}

#[derive(Serialize)]
struct VenueDay {
    venue_id: String,
    day: String,
    bookings: usize,
    expected: i64,
    arrived: i64,
    inside_now: i64,
}

/// The first and one-past-last instant of a `YYYY-MM-DD` day in Beijing time.
fn day_bounds(day: &str) -> Option<(i64, i64)> {
    use kepu_sync_core::calendar::{DAY_MS, china_day_start, parse_date};
    let start = china_day_start(parse_date(day)?);
    Some((start, start + DAY_MS))
}

async fn venue_day(
    State(state): State<AppState>,
    AuthenticatedDevice(id): AuthenticatedDevice,
    Path(venue): Path<String>,
    Query(f): Query<Filter>,
) -> Result<ApiJson<VenueDay>> {
    let allowed = id.writer.role == Role::BureauAdmin
        || (id.writer.role == Role::VenueStaff
            && id.writer.venue.is_some_and(|v| v.to_string() == venue));
    if !allowed {
        return Err(Error::Forbidden(
            "only this venue's staff and bureau administrators",
        ));
    }
    let day = f
        .day
        .ok_or_else(|| Error::InvalidInput("day=YYYY-MM-DD is required".into()))?;
    let (start, end) =
        day_bounds(&day).ok_or_else(|| Error::InvalidInput("day must be YYYY-MM-DD".into()))?;
    let rows: Vec<BookingRow> = state
        .store
        .bookings(None, Some(&venue))
        .await?
        .into_iter()
        .filter(|b| b.slot_start.is_some_and(|s| s >= start && s < end))
        .collect();
    Ok(ApiJson(VenueDay {
        venue_id: venue,
        day,
        bookings: rows.len(),
        expected: rows.iter().map(|b| b.expected).sum(),
        arrived: rows.iter().map(|b| b.arrived).sum(),
        inside_now: rows.iter().map(|b| b.inside_now).sum(),
    }))
}

#[derive(Serialize)]
struct Hours {
    volunteers: Vec<VolunteerHours>,
}

async fn volunteer_hours(
    State(state): State<AppState>,
    AuthenticatedDevice(id): AuthenticatedDevice,
    Query(f): Query<Filter>,
) -> Result<ApiJson<Hours>> {
    // Venue staff see the hours volunteers logged at their own venue, of any school,
    // and nothing logged elsewhere; teachers their school's volunteers.
    let (school, venue) = scope(&id, &f)?;
    let venue = match id.writer.role {
        Role::VenueStaff => venue,
        _ => None,
    };
    Ok(ApiJson(Hours {
        volunteers: state
            .store
            .volunteer_hours_at(school.as_deref(), venue.as_deref())
            .await?,
    }))
}

#[cfg(test)]
mod tests {
    use super::day_bounds;

    #[test]
    fn a_day_is_counted_in_beijing_time() {
        // 2026-11-28 00:00 +08:00 = 2026-11-27 16:00 UTC.
        assert_eq!(
            day_bounds("2026-11-28"),
            Some((1_795_795_200_000, 1_795_881_600_000))
        );
        assert_eq!(day_bounds("2026-13-01"), None);
        assert_eq!(day_bounds("yesterday"), None);
    }
}
