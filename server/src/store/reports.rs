//! What the programme reports read: the schools in a scope with where they are, and what
//! the records hold for each (visits, sessions, lectures, tour stops and the pupils they
//! reached, pupils, confirmed volunteer minutes) within a window of time.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::Result;
use crate::store::Store;

/// Where a school is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchoolPlace {
    /// School id.
    pub school_id: String,
    /// School name.
    pub school: String,
    /// County id.
    pub county_id: String,
    /// County name.
    pub county: String,
    /// City id.
    pub city_id: String,
    /// City name.
    pub city: String,
}

/// What the records hold for one school (the reports keep the period's dates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchoolFacts {
    /// Slot starts (unix ms) of the school's bookings with at least one counted arrival.
    pub visits: Vec<i64>,
    /// Sessions: (at, minutes, how many). One session is `(at, minutes, 1)`; a caller may
    /// group several sessions of one week into one entry.
    pub sessions: Vec<(i64, i64, i64)>,
    /// Lecture times.
    pub lectures: Vec<i64>,
    /// Tour stops: (stop key unique across documents, at, days).
    pub tour_stops: Vec<(String, i64, i64)>,
    /// Distinct pupils recorded at the school's tour stops held in the period (the
    /// loader counts them in the database: one pupil recorded by several devices or at
    /// several stops is one).
    pub tour_reached: i64,
    /// Pupils of the school: named ones plus the anonymous count of erased ones.
    pub pupils: i64,
    /// Activities of the school's volunteers: (start, confirmed minutes).
    pub volunteer_activities: Vec<(i64, i64)>,
}

/// Which schools a report covers: filters by city, county and school id (empty = all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// City id.
    pub city: Option<String>,
    /// County id.
    pub county: Option<String>,
    /// School id (a teacher's own school).
    pub school: Option<String>,
}

fn opt(s: Option<&String>) -> &str {
    s.map_or("", String::as_str)
}

impl Store {
    /// The schools in `scope` (ordered by city, county and school name) with what the
    /// records hold for each between `start` (inclusive) and `end` (exclusive), unix ms.
    /// Pupils are counted whatever the window.
    ///
    /// # Errors
    /// A database failure.
    pub async fn school_facts(
        &self,
        scope: &Scope,
        start: i64,
        end: i64,
    ) -> Result<Vec<(SchoolPlace, SchoolFacts)>> {
        let places = sqlx::query(
            "SELECT s.id, s.name, c.id, c.name, ci.id, ci.name FROM schools s \
             JOIN counties c ON c.id = s.county_id JOIN cities ci ON ci.id = c.city_id \
             WHERE ($1 = '' OR ci.id = $1) AND ($2 = '' OR c.id = $2) AND ($3 = '' OR s.id = $3) \
             ORDER BY ci.name, c.name, s.name, s.id",
        )
        .bind(opt(scope.city.as_ref()))
        .bind(opt(scope.county.as_ref()))
        .bind(opt(scope.school.as_ref()))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok(SchoolPlace {
                school_id: r.try_get(0)?,
                school: r.try_get(1)?,
                county_id: r.try_get(2)?,
                county: r.try_get(3)?,
                city_id: r.try_get(4)?,
                city: r.try_get(5)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let mut facts: BTreeMap<String, SchoolFacts> = places
            .iter()
            .map(|p| (p.school_id.clone(), SchoolFacts::default()))
            .collect();

        self.each_school_row(
            "SELECT b.school_id, s.start_ms FROM proj_bookings b JOIN proj_slots s ON s.slot_id = b.slot_id \
             WHERE b.arrived > 0 AND s.start_ms >= $1 AND s.start_ms < $2",
            Some((start, end)),
            &mut facts,
            |f, r| {
                f.visits.push(r.try_get(1)?);
                Ok(())
            },
        )
        .await?;
        self.each_school_row(
            "SELECT school_id, at, minutes FROM proj_school_sessions WHERE at >= $1 AND at < $2",
            Some((start, end)),
            &mut facts,
            |f, r| {
                f.sessions.push((r.try_get(1)?, r.try_get(2)?, 1));
                Ok(())
            },
        )
        .await?;
        self.each_school_row(
            "SELECT school_id, at FROM proj_lectures WHERE at >= $1 AND at < $2",
            Some((start, end)),
            &mut facts,
            |f, r| {
                f.lectures.push(r.try_get(1)?);
                Ok(())
            },
        )
        .await?;
        self.each_school_row(
            "SELECT school_id, doc_id, stop_id, at, days FROM proj_tour_stops WHERE at >= $1 AND at < $2",
            Some((start, end)),
            &mut facts,
            |f, r| {
                let key = format!(
                    "{}/{}",
                    r.try_get::<String, _>(1)?,
                    r.try_get::<String, _>(2)?
                );
                f.tour_stops.push((key, r.try_get(3)?, r.try_get(4)?));
                Ok(())
            },
        )
        .await?;
        self.each_school_row(
            "SELECT t.school_id, CAST(COUNT(DISTINCT a.pupil_id) AS BIGINT) FROM proj_tour_attendance a \
             JOIN proj_tour_stops t ON t.doc_id = a.doc_id AND t.stop_id = a.stop_id \
             WHERE t.at >= $1 AND t.at < $2 GROUP BY t.school_id",
            Some((start, end)),
            &mut facts,
            |f, r| {
                f.tour_reached = r.try_get(1)?;
                Ok(())
            },
        )
        .await?;
        self.each_school_row(
            "SELECT school_id, CAST(COUNT(*) AS BIGINT) FROM users \
             WHERE role = 'pupil' AND school_id IS NOT NULL GROUP BY school_id",
            None,
            &mut facts,
            |f, r| {
                f.pupils += r.try_get::<i64, _>(1)?;
                Ok(())
            },
        )
        .await?;
        self.each_school_row(
            "SELECT school_id, erased_count FROM school_erased_pupils",
            None,
            &mut facts,
            |f, r| {
                f.pupils += r.try_get::<i64, _>(1)?;
                Ok(())
            },
        )
        .await?;
        self.each_school_row(
            "SELECT school_id, start_ms, confirmed_minutes FROM proj_activities \
             WHERE school_id IS NOT NULL AND confirmed_minutes > 0 AND start_ms >= $1 AND start_ms < $2",
            Some((start, end)),
            &mut facts,
            |f, r| {
                f.volunteer_activities.push((r.try_get(1)?, r.try_get(2)?));
                Ok(())
            },
        )
        .await?;

        Ok(places
            .into_iter()
            .map(|p| {
                let f = facts.remove(&p.school_id).unwrap_or_default();
                (p, f)
            })
            .collect())
    }

    /// Runs `sql` (its first column a school id; `$1`..`$2` the window when given) and
    /// hands each row of a school in `facts` to `add`. Rows of other schools are skipped.
    async fn each_school_row(
        &self,
        sql: &'static str,
        window: Option<(i64, i64)>,
        facts: &mut BTreeMap<String, SchoolFacts>,
        add: impl Fn(&mut SchoolFacts, &AnyRow) -> Result<()>,
    ) -> Result<()> {
        let mut query = sqlx::query(sql);
        if let Some((start, end)) = window {
            query = query.bind(start).bind(end);
        }
        for r in query.fetch_all(&self.pool).await? {
            if let Some(f) = facts.get_mut(&r.try_get::<String, _>(0)?) {
                add(f, &r)?;
            }
        }
        Ok(())
    }
}
