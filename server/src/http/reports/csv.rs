//! The reports as CSV files for spreadsheet programs.

use super::Report;
use crate::error::{Error, Result};
use crate::reports::{Level, Miss};

fn misses_text(misses: &[Miss]) -> String {
    misses
        .iter()
        .map(|m| m.code())
        .collect::<Vec<_>>()
        .join(";")
}

/// A cell as a spreadsheet program may open it without running it: text that begins
/// with `=`, `+`, `-`, `@`, a tab or a carriage return (which spreadsheets read as a
/// formula, even after such a character) gets a leading `'`, so it shows as text. A
/// number (`-12`, `-0.5`) stays as it is, since it is a number and nothing else.
fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && !is_plain_number(cell) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// `-?digits(.digits)?`, nothing else.
fn is_plain_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// The report as CSV: a UTF-8 byte-order mark (so spreadsheet programs read the Chinese
/// names), a header row, one row per school or area; misses joined with `;`. Every cell
/// goes through [`spreadsheet_safe`].
pub(super) fn to_csv(report: &Report) -> Result<Vec<u8>> {
    let mut out = Vec::from(*b"\xEF\xBB\xBF");
    {
        let mut w = ::csv::Writer::from_writer(&mut out);
        let err = |e: ::csv::Error| Error::Io(std::io::Error::other(e));
        if report.level == Level::Schools {
            w.write_record([
                "school_id",
                "school",
                "county_id",
                "county",
                "city_id",
                "city",
                "year",
                "as_of",
                "venue_visits",
                "sessions",
                "session_minutes",
                "weeks_elapsed",
                "weeks_with_session",
                "weeks_missed",
                "lectures",
                "tour_stops",
                "tour_days",
                "pupils",
                "pupils_reached",
                "tour_coverage",
                "volunteer_minutes",
                "volunteer_hours",
                "misses",
            ])
            .map_err(err)?;
            for r in &report.schools {
                let p = &r.place;
                w.write_record(
                    [
                        p.school_id.clone(),
                        p.school.clone(),
                        p.county_id.clone(),
                        p.county.clone(),
                        p.city_id.clone(),
                        p.city.clone(),
                        r.year.to_string(),
                        r.as_of.clone(),
                        r.venue_visits.to_string(),
                        r.sessions.to_string(),
                        r.session_minutes.to_string(),
                        r.weeks_elapsed.to_string(),
                        r.weeks_with_session.to_string(),
                        r.weeks_missed.to_string(),
                        r.lectures.to_string(),
                        r.tour_stops.to_string(),
                        r.tour_days.to_string(),
                        r.pupils.to_string(),
                        r.pupils_reached.to_string(),
                        r.tour_coverage.to_string(),
                        r.volunteer_minutes.to_string(),
                        r.volunteer_hours.to_string(),
                        misses_text(&r.misses),
                    ]
                    .iter()
                    .map(|c| spreadsheet_safe(c).into_owned()),
                )
                .map_err(err)?;
            }
        } else {
            let counties = report.level == Level::Counties;
            let mut header: Vec<&str> = if counties {
                vec!["county_id", "county", "city_id", "city"]
            } else {
                vec!["city_id", "city"]
            };
            header.extend([
                "year",
                "as_of",
                "schools",
                "venue_visits",
                "schools_with_venue_visit",
                "sessions",
                "weeks_missed",
                "schools_with_weekly_sessions",
                "lectures",
                "schools_with_expert_lecture",
                "tour_stops",
                "tour_days",
                "pupils",
                "pupils_reached",
                "coverage_rate",
                "schools_with_full_tour_coverage",
                "volunteer_minutes",
                "volunteer_hours",
                "schools_with_misses",
                "misses",
            ]);
            w.write_record(&header).map_err(err)?;
            for a in &report.areas {
                let mut record = vec![a.id.clone(), a.name.clone()];
                if counties {
                    record.extend([a.city_id.clone(), a.city.clone()]);
                }
                record.extend([
                    a.year.to_string(),
                    a.as_of.clone(),
                    a.schools.to_string(),
                    a.venue_visits.to_string(),
                    a.schools_meeting.venue_visit.to_string(),
                    a.sessions.to_string(),
                    a.weeks_missed.to_string(),
                    a.schools_meeting.weekly_sessions.to_string(),
                    a.lectures.to_string(),
                    a.schools_meeting.expert_lecture.to_string(),
                    a.tour_stops.to_string(),
                    a.tour_days.to_string(),
                    a.pupils.to_string(),
                    a.pupils_reached.to_string(),
                    a.coverage_rate.to_string(),
                    a.schools_meeting.tour_coverage.to_string(),
                    a.volunteer_minutes.to_string(),
                    a.volunteer_hours.to_string(),
                    a.schools_with_misses.to_string(),
                    misses_text(&a.misses),
                ]);
                w.write_record(record.iter().map(|c| spreadsheet_safe(c).into_owned()))
                    .map_err(err)?;
            }
        }
        w.flush()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::spreadsheet_safe;

    #[test]
    fn cells_that_spreadsheets_would_run_are_made_text() {
        for (cell, safe) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1+2", "'+1+2"),
            ("-1+cmd|' /C calc'!A0", "'-1+cmd|' /C calc'!A0"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-", "'-"),
            ("-12", "-12"),
            ("-0.5", "-0.5"),
            ("12", "12"),
            ("博才小学", "博才小学"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_safe(cell), safe, "{cell:?}");
        }
    }
}
