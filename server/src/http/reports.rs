//! Programme reports over HTTP: `GET /api/reports/{schools|counties|cities}` as JSON, or
//! CSV with `format=csv` (or a `.csv` suffix), and `GET /reports`, a printable HTML page
//! with bar charts drawn on the server as inline SVG.
//!
//! Bureau administrators see every school and area; a teacher sees their own school's row
//! (schools level only). Query values: `year`, `as_of` (`YYYY-MM-DD`, China time), `city`,
//! `county` (ids), `format` (`json`, `csv`), on the page `level` and `lang` (`zh`, `en`).

mod csv;
mod html;
mod svg;

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::page::{self, Caching, Lang, Policy};
use super::{PageUser, WebUser};
use crate::accounts::Role;
use crate::app_state::AppState;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::reports::{
    AreaRow, Level, Period, SchoolRow, Scope, aggregate, load_schools, period_for,
};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/reports/{level}", get(report_api))
        .route("/reports", get(report_page))
}

type Params = HashMap<String, String>;

/// The week rule, stated in every JSON report.
const WEEK_RULE: &str =
    "7-day weeks from 1 January (week 53 is the last one or two days), China time (UTC+8)";

fn param<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
    params.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn id_param(params: &Params, key: &'static str) -> Result<Option<String>> {
    match param(params, key) {
        None => Ok(None),
        Some(text) => uuid::Uuid::parse_str(text)
            .map(|u| Some(u.to_string()))
            .map_err(|_| Error::InvalidInput(format!("{key} must be an id (uuid)"))),
    }
}

fn parse_level(text: &str) -> Result<Level> {
    Level::parse(text)
        .ok_or_else(|| Error::InvalidInput("level must be schools, counties or cities".into()))
}

/// The schools a user may see at a level, with the requested filters.
fn scope_for(user: &WebUser, level: Level, params: &Params) -> Result<Scope> {
    let mut scope = Scope {
        city: id_param(params, "city")?,
        county: id_param(params, "county")?,
        school: None,
    };
    match user.role {
        Role::BureauAdmin => Ok(scope),
        Role::Teacher => {
            if level != Level::Schools {
                return Err(Error::Forbidden(
                    "teachers see their own school's row only (level schools)",
                ));
            }
            let school = user.school_id.ok_or(Error::Forbidden(
                "this teacher account is not linked to a school",
            ))?;
            scope.school = Some(school.to_string());
            Ok(scope)
        }
        _ => Err(Error::Forbidden(
            "only bureau administrators and teachers read programme reports",
        )),
    }
}

/// A computed report.
#[derive(Debug, Clone, Serialize)]
struct Report {
    level: Level,
    year: i64,
    as_of: String,
    week_rule: &'static str,
    #[serde(skip)]
    weeks_completed: usize,
    schools: Vec<SchoolRow>,
    areas: Vec<AreaRow>,
}

async fn compute(
    state: &AppState,
    user: &WebUser,
    level: Level,
    params: &Params,
) -> Result<Report> {
    let period: Period = period_for(param(params, "year"), param(params, "as_of"), now_ms())?;
    let scope = scope_for(user, level, params)?;
    let schools = load_schools(&state.store, &period, &scope).await?;
    let areas = aggregate(&period, level, &schools);
    Ok(Report {
        level,
        year: period.year,
        as_of: period.as_of(),
        week_rule: WEEK_RULE,
        weeks_completed: period.weeks_completed(),
        schools,
        areas,
    })
}

#[derive(Serialize)]
struct JsonReport<'a, T: Serialize> {
    level: Level,
    year: i64,
    as_of: &'a str,
    week_rule: &'static str,
    rows: &'a [T],
}

async fn report_api(
    State(state): State<AppState>,
    user: WebUser,
    Path(level): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response> {
    let (name, csv_suffix) = match level.strip_suffix(".csv") {
        Some(base) => (base, true),
        None => (level.strip_suffix(".json").unwrap_or(&level), false),
    };
    let level = parse_level(name)?;
    let csv = match param(&params, "format") {
        None => csv_suffix,
        Some("csv") => true,
        Some("json") => csv_suffix,
        Some(_) => return Err(Error::InvalidInput("format must be json or csv".into())),
    };
    let report = compute(&state, &user, level, &params).await?;
    if csv {
        let body = csv::to_csv(&report)?;
        let mut response = body.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"kepu-report-{}-{}.csv\"",
            level.as_str(),
            report.year
        )) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(response);
    }
    let json = if level == Level::Schools {
        serde_json::to_vec(&JsonReport {
            level,
            year: report.year,
            as_of: &report.as_of,
            week_rule: WEEK_RULE,
            rows: &report.schools,
        })
    } else {
        serde_json::to_vec(&JsonReport {
            level,
            year: report.year,
            as_of: &report.as_of,
            week_rule: WEEK_RULE,
            rows: &report.areas,
        })
    }
    .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    let mut response = json.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn report_page(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(params): Query<Params>,
) -> Result<Response> {
    let level = match param(&params, "level") {
        None => {
            if user.role == Role::Teacher {
                Level::Schools
            } else {
                Level::Counties
            }
        }
        Some(text) => parse_level(text)?,
    };
    // The reports page is Chinese unless English is asked for.
    let lang = match param(&params, "lang") {
        None => Lang::Zh,
        Some(code) => {
            Lang::parse(code).ok_or_else(|| Error::InvalidInput("lang must be zh or en".into()))?
        }
    };
    let report = compute(&state, &user, level, &params).await?;
    let page = html::render_page(&report, lang, &params, user.role == Role::BureauAdmin);
    Ok(page::html(
        StatusCode::OK,
        Policy::InlineStyle,
        Caching::NoStore,
        page,
    ))
}
