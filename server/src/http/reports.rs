//! Programme reports over HTTP: `GET /api/reports/{schools|counties|cities}` as JSON, or
//! CSV with `format=csv` (or a `.csv` suffix), and `GET /reports`, a printable HTML page
//! with bar charts drawn on the server as inline SVG.
//!
//! Bureau administrators see every school and area; a teacher sees their own school's row
//! (schools level only). Query values: `year`, `as_of` (`YYYY-MM-DD`, China time), `city`,
//! `county` (ids), `format` (`json`, `csv`), on the page `level` and `lang` (`zh`, `en`).

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::text::{html_escape, percent_encode};
use super::{PageUser, WebUser};
use crate::accounts::Role;
use crate::app_state::AppState;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::reports::{
    AreaRow, Level, Miss, Period, SchoolRow, Scope, aggregate, load_schools, period_for,
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
        let body = to_csv(&report)?;
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
fn to_csv(report: &Report) -> Result<Vec<u8>> {
    let mut out = Vec::from(*b"\xEF\xBB\xBF");
    {
        let mut w = csv::Writer::from_writer(&mut out);
        let err = |e: csv::Error| Error::Io(std::io::Error::other(e));
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
    let lang = match param(&params, "lang") {
        None | Some("zh") => Lang::Zh,
        Some("en") => Lang::En,
        Some(_) => return Err(Error::InvalidInput("lang must be zh or en".into())),
    };
    let report = compute(&state, &user, level, &params).await?;
    let page = render_page(&report, lang, &params, user.role == Role::BureauAdmin);
    let mut response = page.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    Ok(response)
}

/// Page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Zh,
    En,
}

impl Lang {
    const fn code(self) -> &'static str {
        match self {
            Self::Zh => "zh",
            Self::En => "en",
        }
    }

    /// A label in this language.
    fn t(self, key: &str) -> &'static str {
        let (zh, en) = match key {
            "title" => ("“双走进”工作报表", "“Two Walk-Ins” programme report"),
            "schools" => ("学校", "Schools"),
            "counties" => ("区县", "Counties"),
            "cities" => ("市州", "Cities"),
            "year" => ("年度", "Year"),
            "as_of" => ("截至", "As of"),
            "school" => ("学校", "School"),
            "county" => ("区县", "County"),
            "city" => ("市州", "City"),
            "venue_visits" => ("场馆参观", "Venue visits"),
            "sessions" => ("校内科普课", "In-school sessions"),
            "weeks" => ("有课周数/已过周数", "Weeks with a session / elapsed"),
            "weeks_missed" => ("缺课周数", "Weeks missed"),
            "lectures" => ("专家讲座", "Expert lectures"),
            "tour_stops" => ("流动科技馆站点(天数)", "Mobile-museum stops (days)"),
            "coverage" => ("流动科技馆覆盖率", "Tour coverage"),
            "pupils" => ("学生数", "Pupils"),
            "volunteer_hours" => ("志愿服务时长(小时)", "Volunteer hours"),
            "misses" => ("未达标", "Misses"),
            "n_schools" => ("学校数", "Schools"),
            "meeting" => ("达标学校数", "Schools meeting target"),
            "chart_visits" => ("各校场馆参观次数", "Venue visits per school"),
            "chart_weeks" => (
                "每周校内科普课（红色为缺课周）",
                "Weekly in-school sessions (red: week missed)",
            ),
            "chart_coverage" => ("流动科技馆学生覆盖率", "Mobile-museum tour coverage"),
            "chart_meeting" => (
                "各项目标达标学校比例",
                "Share of schools meeting each target",
            ),
            "chart_hours" => ("志愿服务时长", "Volunteer hours"),
            "t_visit" => ("场馆参观≥1次", "≥ 1 venue visit"),
            "t_weekly" => ("每周科普课", "Weekly session"),
            "t_lecture" => ("专家讲座≥1次", "≥ 1 expert lecture"),
            "t_tour" => ("流动科技馆全覆盖", "Full tour coverage"),
            "csv" => ("下载CSV", "Download CSV"),
            "print" => (
                "打印本页即可生成纸质报表。",
                "Print this page for a paper copy.",
            ),
            "none" => ("无", "none"),
            "empty" => ("没有符合条件的学校。", "No schools match."),
            "rules" => (
                "规则：按北京时间统计；周为自1月1日起每7天一周，进行中的一周不计缺课；场馆参观、专家讲座和流动科技馆全覆盖自7月1日起未达标即标记。",
                "Rules: China time; weeks are 7-day weeks from 1 January and the week in progress is never a miss; the annual targets (venue visit, expert lecture, full tour coverage) are flagged from 1 July.",
            ),
            "no_venue_visit" => ("无场馆参观", "no venue visit"),
            "weeks_without_session" => ("有周无科普课", "weeks without a session"),
            "no_expert_lecture" => ("无专家讲座", "no expert lecture"),
            "tour_coverage_incomplete" => ("流动科技馆未全覆盖", "tour coverage incomplete"),
            _ => ("", ""),
        };
        match self {
            Self::Zh => zh,
            Self::En => en,
        }
    }
}

fn enc(text: &str) -> String {
    percent_encode(text, b"")
}

/// One bar of a horizontal bar chart.
struct Bar {
    label: String,
    value: f64,
    text: String,
    miss: bool,
}

const LABEL_W: i64 = 200;
const BAR_W: i64 = 380;
const ROW_H: i64 = 22;

/// A horizontal bar chart as inline SVG; bars scaled to `max` (at least the largest).
fn bar_chart(title: &str, bars: &[Bar], max: f64) -> String {
    let longest = bars
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(0);
    // Room for the longest label (about 13 px a character), at least the default.
    let label_w = (i64::try_from(longest).unwrap_or(0) * 13 + 12).clamp(LABEL_W, 420);
    let max = bars.iter().map(|b| b.value).fold(max, f64::max).max(1e-9);
    let height = ROW_H * i64::try_from(bars.len()).unwrap_or(0) + 30;
    let width = label_w + BAR_W + 140;
    let mut s = format!(
        "<figure class=\"chart\"><figcaption>{}</figcaption>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"{}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">",
        html_escape(title),
        html_escape(title)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = 10 + ROW_H * i64::try_from(i).unwrap_or(0);
        #[allow(clippy::cast_possible_truncation)]
        let w = ((b.value / max) * f64::from(i32::try_from(BAR_W).unwrap_or(0))).round() as i64;
        // A missed target with nothing to draw still shows a red stub.
        let w = if b.miss { w.max(3) } else { w.max(0) };
        let class = if b.miss { "bar miss" } else { "bar" };
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"lbl\">{}</text>\
             <rect x=\"{label_w}\" y=\"{}\" width=\"{}\" height=\"{}\" class=\"{class}\"/>\
             <text x=\"{}\" y=\"{}\" class=\"val\">{}</text>",
            label_w - 6,
            y + 15,
            html_escape(&b.label),
            y + 3,
            w,
            ROW_H - 6,
            label_w + w + 4,
            y + 15,
            html_escape(&b.text)
        );
    }
    s.push_str("</svg></figure>");
    s
}

/// One row per school, one cell per elapsed week, shaded by sessions; completed weeks
/// without a session in red.
fn heat_strip(title: &str, rows: &[SchoolRow], weeks_completed: usize) -> String {
    const CELL: i64 = 11;
    let weeks = rows
        .iter()
        .map(|r| r.week_sessions.len())
        .max()
        .unwrap_or(0);
    let weeks_i = i64::try_from(weeks).unwrap_or(0);
    let width = LABEL_W + CELL * weeks_i.max(1) + 20;
    let height = ROW_H * i64::try_from(rows.len()).unwrap_or(0) + 34;
    let mut s = format!(
        "<figure class=\"chart\"><figcaption>{}</figcaption>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"{}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">",
        html_escape(title),
        html_escape(title)
    );
    for w in (0..weeks).step_by(4) {
        let x = LABEL_W + CELL * i64::try_from(w).unwrap_or(0);
        let _ = write!(
            s,
            "<text x=\"{x}\" y=\"10\" class=\"tick\">{}</text>",
            w + 1
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = 16 + ROW_H * i64::try_from(i).unwrap_or(0);
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"lbl\">{}</text>",
            LABEL_W - 6,
            y + 14,
            html_escape(&r.place.school)
        );
        for (w, &n) in r.week_sessions.iter().enumerate() {
            let class = match n {
                0 if w < weeks_completed => "w0 miss",
                0 => "w0",
                1 => "w1",
                2 => "w2",
                _ => "w3",
            };
            let x = LABEL_W + CELL * i64::try_from(w).unwrap_or(0);
            let _ = write!(
                s,
                "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{}\" class=\"{class}\"><title>{} {}: {n}</title></rect>",
                y + 2,
                CELL - 2,
                ROW_H - 6,
                html_escape(&r.place.school),
                w + 1
            );
        }
    }
    s.push_str("</svg></figure>");
    s
}

fn pct(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

fn misses_cell(lang: Lang, misses: &[Miss]) -> String {
    if misses.is_empty() {
        return format!("<td class=\"ok\">{}</td>", lang.t("none"));
    }
    let text = misses
        .iter()
        .map(|m| {
            format!(
                "<span class=\"code\" title=\"{}\">{}</span>",
                m.code(),
                lang.t(m.code())
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    format!("<td class=\"miss\">{text}</td>")
}

fn td(value: impl std::fmt::Display, miss: bool) -> String {
    if miss {
        format!("<td class=\"num miss\">{value}</td>")
    } else {
        format!("<td class=\"num\">{value}</td>")
    }
}

const STYLE: &str = "body{font-family:system-ui,'Noto Sans CJK SC','Microsoft YaHei',sans-serif;margin:24px;color:#222}\
h1{font-size:22px;margin:0 0 4px}.meta{color:#555;margin:0 0 12px}.nav a{margin-right:12px}\
table{border-collapse:collapse;margin:16px 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 6px}\
th{background:#f3f5f8;text-align:left}td.num{text-align:right}td.miss{background:#fde2e1;color:#8a1c12}\
td.ok{color:#1d6b32}.code{white-space:nowrap}.charts{display:flex;flex-wrap:wrap;gap:16px}\
figure.chart{margin:0;border:1px solid #e2e2e2;padding:8px;page-break-inside:avoid}figcaption{font-weight:600;margin-bottom:4px}\
svg text{font-size:12px;fill:#222}svg .tick{font-size:9px;fill:#777}\
svg .bar{fill:#3a7bd5}svg .bar.miss{fill:#d9534f}svg .w0{fill:#eceff1}svg .w0.miss{fill:#e57373}\
svg .w1{fill:#a5d6a7}svg .w2{fill:#4caf50}svg .w3{fill:#1b5e20}.rules{font-size:12px;color:#555;max-width:900px}\
@media print{.nav,.noprint{display:none}body{margin:8mm}figure.chart{border:none}td.miss{-webkit-print-color-adjust:exact;print-color-adjust:exact}\
svg .bar,svg .w0,svg .w1,svg .w2,svg .w3{-webkit-print-color-adjust:exact;print-color-adjust:exact}}";

/// The page's query string with some keys replaced.
fn link(params: &Params, set: &[(&str, &str)]) -> String {
    let mut keys: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| {
            ["year", "as_of", "city", "county", "level", "lang"].contains(&k.as_str())
                && !set.iter().any(|(s, _)| s == k)
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    keys.extend(set.iter().copied());
    keys.sort_unstable();
    keys.iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&amp;")
}

#[allow(clippy::too_many_lines)]
fn render_page(report: &Report, lang: Lang, params: &Params, admin: bool) -> String {
    let level_name = lang.t(report.level.as_str());
    let mut s = String::with_capacity(16 * 1024);
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · {} · {}</title><style>{STYLE}</style></head><body>",
        if lang == Lang::Zh { "zh-CN" } else { "en" },
        lang.t("title"),
        level_name,
        report.year
    );
    let _ = write!(
        s,
        "<h1>{} — {}</h1><p class=\"meta\">{} {} · {} {}</p>",
        lang.t("title"),
        level_name,
        lang.t("year"),
        report.year,
        lang.t("as_of"),
        html_escape(&report.as_of)
    );
    s.push_str("<p class=\"nav\">");
    let levels: &[Level] = if admin {
        &[Level::Schools, Level::Counties, Level::Cities]
    } else {
        &[Level::Schools]
    };
    for l in levels {
        let _ = write!(
            s,
            "<a href=\"/reports?{}\">{}</a>",
            link(params, &[("level", l.as_str())]),
            lang.t(l.as_str())
        );
    }
    let other = if lang == Lang::Zh { Lang::En } else { Lang::Zh };
    let _ = write!(
        s,
        "<a href=\"/reports?{}\">{}</a>",
        link(
            params,
            &[("lang", other.code()), ("level", report.level.as_str())]
        ),
        if other == Lang::Zh {
            "中文"
        } else {
            "English"
        }
    );
    let csv_query = link(params, &[("format", "csv")]);
    let _ = write!(
        s,
        "<a href=\"/api/reports/{}?{csv_query}\">{}</a></p>",
        report.level.as_str(),
        lang.t("csv")
    );
    let _ = write!(
        s,
        "<p class=\"rules\">{} <span class=\"noprint\">{}</span></p>",
        lang.t("rules"),
        lang.t("print")
    );

    if report.level == Level::Schools {
        render_schools(&mut s, report, lang);
    } else {
        render_areas(&mut s, report, lang);
    }
    s.push_str("</body></html>");
    s
}

fn render_schools(s: &mut String, report: &Report, lang: Lang) {
    let rows = &report.schools;
    if rows.is_empty() {
        let _ = write!(s, "<p>{}</p>", lang.t("empty"));
        return;
    }
    s.push_str("<div class=\"charts\">");
    let visits: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            label: r.place.school.clone(),
            #[allow(clippy::cast_precision_loss)]
            value: r.venue_visits as f64,
            text: r.venue_visits.to_string(),
            miss: r.misses.contains(&Miss::NoVenueVisit),
        })
        .collect();
    s.push_str(&bar_chart(lang.t("chart_visits"), &visits, 1.0));
    s.push_str(&heat_strip(
        lang.t("chart_weeks"),
        rows,
        report.weeks_completed,
    ));
    let coverage: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            label: r.place.school.clone(),
            value: r.tour_coverage,
            text: format!(
                "{} ({}/{})",
                pct(r.tour_coverage),
                r.pupils_reached,
                r.pupils
            ),
            miss: r.misses.contains(&Miss::TourCoverageIncomplete),
        })
        .collect();
    s.push_str(&bar_chart(lang.t("chart_coverage"), &coverage, 1.0));
    s.push_str("</div>");
    let _ = write!(
        s,
        "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>\
         <th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        lang.t("city"),
        lang.t("county"),
        lang.t("school"),
        lang.t("venue_visits"),
        lang.t("sessions"),
        lang.t("weeks"),
        lang.t("weeks_missed"),
        lang.t("lectures"),
        lang.t("tour_stops"),
        lang.t("coverage"),
        lang.t("volunteer_hours"),
        lang.t("misses"),
    );
    for r in rows {
        let has = |m: Miss| r.misses.contains(&m);
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td>{}{}{}{}{}{}{}{}{}</tr>",
            html_escape(&r.place.city),
            html_escape(&r.place.county),
            html_escape(&r.place.school),
            td(r.venue_visits, has(Miss::NoVenueVisit)),
            td(r.sessions, false),
            td(
                format!("{}/{}", r.weeks_with_session, r.weeks_elapsed),
                false
            ),
            td(r.weeks_missed, has(Miss::WeeksWithoutSession)),
            td(r.lectures, has(Miss::NoExpertLecture)),
            td(format!("{} ({})", r.tour_stops, r.tour_days), false),
            td(
                format!(
                    "{} ({}/{})",
                    pct(r.tour_coverage),
                    r.pupils_reached,
                    r.pupils
                ),
                has(Miss::TourCoverageIncomplete)
            ),
            td(r.volunteer_hours, false),
            misses_cell(lang, &r.misses),
        );
    }
    s.push_str("</tbody></table>");
}

fn render_areas(s: &mut String, report: &Report, lang: Lang) {
    let rows = &report.areas;
    if rows.is_empty() {
        let _ = write!(s, "<p>{}</p>", lang.t("empty"));
        return;
    }
    s.push_str("<div class=\"charts\">");
    let coverage: Vec<Bar> = rows
        .iter()
        .map(|a| Bar {
            label: a.name.clone(),
            value: a.coverage_rate,
            text: format!(
                "{} ({}/{})",
                pct(a.coverage_rate),
                a.pupils_reached,
                a.pupils
            ),
            miss: a.misses.contains(&Miss::TourCoverageIncomplete),
        })
        .collect();
    s.push_str(&bar_chart(lang.t("chart_coverage"), &coverage, 1.0));
    let mut meeting = Vec::new();
    for a in rows {
        let m = &a.schools_meeting;
        for (key, n) in [
            ("t_visit", m.venue_visit),
            ("t_weekly", m.weekly_sessions),
            ("t_lecture", m.expert_lecture),
            ("t_tour", m.tour_coverage),
        ] {
            #[allow(clippy::cast_precision_loss)]
            let share = if a.schools > 0 {
                n as f64 / a.schools as f64
            } else {
                0.0
            };
            meeting.push(Bar {
                label: format!("{} · {}", a.name, lang.t(key)),
                value: share,
                text: format!("{n}/{}", a.schools),
                miss: n < a.schools,
            });
        }
    }
    s.push_str(&bar_chart(lang.t("chart_meeting"), &meeting, 1.0));
    let hours: Vec<Bar> = rows
        .iter()
        .map(|a| Bar {
            label: a.name.clone(),
            value: a.volunteer_hours,
            text: a.volunteer_hours.to_string(),
            miss: false,
        })
        .collect();
    s.push_str(&bar_chart(lang.t("chart_hours"), &hours, 1.0));
    s.push_str("</div>");
    let name_key = if report.level == Level::Counties {
        "county"
    } else {
        "city"
    };
    let _ = write!(
        s,
        "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{} · {}</th><th>{}</th>\
         <th>{} · {}</th><th>{}</th><th>{} · {}</th><th>{}</th><th>{} · {}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        lang.t(name_key),
        lang.t("n_schools"),
        lang.t("venue_visits"),
        lang.t("meeting"),
        lang.t("t_visit"),
        lang.t("sessions"),
        lang.t("meeting"),
        lang.t("t_weekly"),
        lang.t("lectures"),
        lang.t("meeting"),
        lang.t("t_lecture"),
        lang.t("coverage"),
        lang.t("meeting"),
        lang.t("t_tour"),
        lang.t("volunteer_hours"),
        lang.t("misses"),
    );
    for a in rows {
        let m = &a.schools_meeting;
        let _ = write!(
            s,
            "<tr><td>{}</td>{}{}{}{}{}{}{}{}{}{}{}</tr>",
            html_escape(&a.name),
            td(a.schools, false),
            td(a.venue_visits, false),
            td(
                format!("{}/{}", m.venue_visit, a.schools),
                m.venue_visit < a.schools
            ),
            td(a.sessions, false),
            td(
                format!("{}/{}", m.weekly_sessions, a.schools),
                m.weekly_sessions < a.schools
            ),
            td(a.lectures, false),
            td(
                format!("{}/{}", m.expert_lecture, a.schools),
                m.expert_lecture < a.schools
            ),
            td(
                format!(
                    "{} ({}/{})",
                    pct(a.coverage_rate),
                    a.pupils_reached,
                    a.pupils
                ),
                false
            ),
            td(
                format!("{}/{}", m.tour_coverage, a.schools),
                m.tour_coverage < a.schools
            ),
            td(a.volunteer_hours, false),
            misses_cell(lang, &a.misses),
        );
    }
    s.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::{enc, html_escape, spreadsheet_safe};

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

    #[test]
    fn text_is_escaped_for_html_and_urls() {
        assert_eq!(
            html_escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(enc("2026-11-28"), "2026-11-28");
        assert_eq!(enc("a b&c"), "a%20b%26c");
    }
}
