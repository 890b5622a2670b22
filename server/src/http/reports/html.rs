//! The printable reports page: the figures as tables and charts, in Chinese or English.

use std::fmt::Write as _;

use super::svg::{Bar, bar_chart, heat_strip};
use super::{Params, Report};
use crate::http::page::{Lang, Shell, Style};
use crate::http::text::{html_escape, percent_encode};
use crate::reports::{Level, Miss};

/// A label of the reports page in `lang`.
fn t(lang: Lang, key: &str) -> &'static str {
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
    lang.pick(zh, en)
}

fn enc(text: &str) -> String {
    percent_encode(text, b"")
}

fn pct(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

fn misses_cell(lang: Lang, misses: &[Miss]) -> String {
    if misses.is_empty() {
        return format!("<td class=\"ok\">{}</td>", t(lang, "none"));
    }
    let text = misses
        .iter()
        .map(|m| {
            format!(
                "<span class=\"code\" title=\"{}\">{}</span>",
                m.code(),
                t(lang, m.code())
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

pub(super) fn render_page(report: &Report, lang: Lang, params: &Params, admin: bool) -> String {
    let level_name = t(lang, report.level.as_str());
    let mut header = String::with_capacity(1024);
    let _ = write!(
        header,
        "<h1>{} — {}</h1><p class=\"meta\">{} {} · {} {}</p>",
        t(lang, "title"),
        level_name,
        t(lang, "year"),
        report.year,
        t(lang, "as_of"),
        html_escape(&report.as_of)
    );
    header.push_str("<p class=\"nav\">");
    let levels: &[Level] = if admin {
        &[Level::Schools, Level::Counties, Level::Cities]
    } else {
        &[Level::Schools]
    };
    for l in levels {
        let _ = write!(
            header,
            "<a href=\"/reports?{}\">{}</a>",
            link(params, &[("level", l.as_str())]),
            t(lang, l.as_str())
        );
    }
    header.push_str(&lang.switch_link(&format!(
        "/reports?{}",
        link(
            params,
            &[
                ("lang", lang.other().code()),
                ("level", report.level.as_str())
            ]
        )
    )));
    let csv_query = link(params, &[("format", "csv")]);
    let _ = write!(
        header,
        "<a href=\"/api/reports/{}?{csv_query}\">{}</a></p>",
        report.level.as_str(),
        t(lang, "csv")
    );

    let mut main = String::with_capacity(16 * 1024);
    let _ = write!(
        main,
        "<p class=\"rules\">{} <span class=\"noprint\">{}</span></p>",
        t(lang, "rules"),
        t(lang, "print")
    );
    if report.level == Level::Schools {
        render_schools(&mut main, report, lang);
    } else {
        render_areas(&mut main, report, lang);
    }
    Shell {
        lang,
        title: &format!("{} · {} · {}", t(lang, "title"), level_name, report.year),
        style: Style::Inline(STYLE),
        header: Some(&header),
        main: &main,
        footer: None,
    }
    .render()
}

fn render_schools(s: &mut String, report: &Report, lang: Lang) {
    let rows = &report.schools;
    if rows.is_empty() {
        let _ = write!(s, "<p>{}</p>", t(lang, "empty"));
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
    s.push_str(&bar_chart(t(lang, "chart_visits"), &visits, 1.0));
    s.push_str(&heat_strip(
        t(lang, "chart_weeks"),
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
    s.push_str(&bar_chart(t(lang, "chart_coverage"), &coverage, 1.0));
    s.push_str("</div>");
    let _ = write!(
        s,
        "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>\
         <th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t(lang, "city"),
        t(lang, "county"),
        t(lang, "school"),
        t(lang, "venue_visits"),
        t(lang, "sessions"),
        t(lang, "weeks"),
        t(lang, "weeks_missed"),
        t(lang, "lectures"),
        t(lang, "tour_stops"),
        t(lang, "coverage"),
        t(lang, "volunteer_hours"),
        t(lang, "misses"),
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
        let _ = write!(s, "<p>{}</p>", t(lang, "empty"));
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
    s.push_str(&bar_chart(t(lang, "chart_coverage"), &coverage, 1.0));
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
                label: format!("{} · {}", a.name, t(lang, key)),
                value: share,
                text: format!("{n}/{}", a.schools),
                miss: n < a.schools,
            });
        }
    }
    s.push_str(&bar_chart(t(lang, "chart_meeting"), &meeting, 1.0));
    let hours: Vec<Bar> = rows
        .iter()
        .map(|a| Bar {
            label: a.name.clone(),
            value: a.volunteer_hours,
            text: a.volunteer_hours.to_string(),
            miss: false,
        })
        .collect();
    s.push_str(&bar_chart(t(lang, "chart_hours"), &hours, 1.0));
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
        t(lang, name_key),
        t(lang, "n_schools"),
        t(lang, "venue_visits"),
        t(lang, "meeting"),
        t(lang, "t_visit"),
        t(lang, "sessions"),
        t(lang, "meeting"),
        t(lang, "t_weekly"),
        t(lang, "lectures"),
        t(lang, "meeting"),
        t(lang, "t_lecture"),
        t(lang, "coverage"),
        t(lang, "meeting"),
        t(lang, "t_tour"),
        t(lang, "volunteer_hours"),
        t(lang, "misses"),
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
    use super::enc;
    use crate::http::text::html_escape;

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
