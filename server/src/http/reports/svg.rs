//! The reports' charts, drawn on the server as inline SVG: horizontal bar charts and the
//! heat strip of weekly sessions.

use std::fmt::Write as _;

use crate::http::text::html_escape;
use crate::reports::SchoolRow;

/// One bar of a horizontal bar chart.
pub(super) struct Bar {
    /// What the bar is of.
    pub label: String,
    /// Its length, against the chart's largest.
    pub value: f64,
    /// The figure written beside it.
    pub text: String,
    /// Drawn red: a missed target.
    pub miss: bool,
}

const LABEL_W: i64 = 200;
const BAR_W: i64 = 380;
const ROW_H: i64 = 22;

/// A horizontal bar chart as inline SVG; bars scaled to `max` (at least the largest).
pub(super) fn bar_chart(title: &str, bars: &[Bar], max: f64) -> String {
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
pub(super) fn heat_strip(title: &str, rows: &[SchoolRow], weeks_completed: usize) -> String {
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
