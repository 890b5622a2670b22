//! The fleet page, `GET /fleet` (filters `stale=N` days, `below=1`, `refusals=1`), and
//! revoking or rotating a device from it: `GET /fleet/devices/{id}/{revoke|rotate|reconnect}`
//! asks for confirmation, and its form posts back to the same address with the login's
//! form token. `reconnect` answers with a one-time code bound to the device (ADR 0172),
//! the way back for a device whose token was rotated. Bureau administrators see every device, a venue's staff their venue's gate
//! devices; everyone else is refused. The pages run no script.

use axum::Form;
use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kepu_sync_core::calendar::{CHINA_UTC_OFFSET_MS, DAY_MS, civil_from_days};
use kepu_sync_core::ids::DeviceId;
use serde::Deserialize;
use uuid::Uuid;

use super::page::{self, Caching, Lang, Policy, Shell, Style};
use super::session::{form_is_genuine, form_token};
use super::text::html_escape as esc;
use super::{PageUser, WebUser};
use crate::accounts::Role;
use crate::app_state::AppState;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::fleet::{self, DeviceView, Filter, Fleet, MAX_STALE_DAYS, Viewer};
use crate::store::FleetDevice;

/// The routes of the fleet page.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/fleet", get(fleet_page))
        .route("/fleet/devices/{id}/{action}", get(confirm_page).post(act))
}

fn viewer(user: WebUser) -> Viewer {
    Viewer {
        role: user.role,
        venue_id: user.venue_id,
    }
}

#[derive(Debug, Default, Deserialize)]
struct FleetParams {
    lang: Option<String>,
    stale: Option<String>,
    below: Option<String>,
    refusals: Option<String>,
    done: Option<String>,
}

fn checked(value: Option<&str>) -> bool {
    matches!(value, Some("1" | "on" | "true"))
}

impl FleetParams {
    fn filter(&self) -> Result<Filter> {
        let stale_days = match self.stale.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<u32>()
                    .ok()
                    .filter(|d| (1..=MAX_STALE_DAYS).contains(d))
                    .ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "stale must be a number of days from 1 to {MAX_STALE_DAYS}"
                        ))
                    })?,
            ),
        };
        Ok(Filter {
            stale_days,
            below_minimum: checked(self.below.as_deref()),
            has_refusals: checked(self.refusals.as_deref()),
        })
    }
}

/// The query string of the fleet page with these filters (already escaped for HTML).
fn fleet_query(lang: Lang, filter: Filter) -> String {
    let mut q = format!("?lang={}", lang.code());
    if let Some(d) = filter.stale_days {
        q.push_str(&format!("&amp;stale={d}"));
    }
    if filter.below_minimum {
        q.push_str("&amp;below=1");
    }
    if filter.has_refusals {
        q.push_str("&amp;refusals=1");
    }
    q
}

async fn fleet_page(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    headers: HeaderMap,
    params: std::result::Result<Query<FleetParams>, QueryRejection>,
) -> Result<Response> {
    let Query(params) = params.map_err(|_| Error::InvalidInput("malformed query string".into()))?;
    let lang = Lang::preferred(params.lang.as_deref(), &headers);
    let viewer = viewer(user);
    viewer.scope()?;
    let filter = params.filter()?;
    let now = now_ms();
    let fleet = fleet::fleet(&state.store, viewer, filter, now).await?;
    let done = match params.done.as_deref() {
        Some("revoked") => Some(Action::Revoke),
        Some("rotated") => Some(Action::Rotate),
        _ => None,
    };
    let html = render_fleet(lang, viewer, filter, &fleet, done, now);
    Ok(page::html(
        StatusCode::OK,
        Policy::InlineStyle,
        Caching::NoStore,
        html,
    ))
}

/// What may be done to a device from the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Revoke,
    Rotate,
    Reconnect,
}

impl Action {
    fn parse(text: &str) -> Result<Self> {
        match text {
            "revoke" => Ok(Self::Revoke),
            "rotate" => Ok(Self::Rotate),
            "reconnect" => Ok(Self::Reconnect),
            _ => Err(Error::not_found("route", "")),
        }
    }

    const fn path(self) -> &'static str {
        match self {
            Self::Revoke => "revoke",
            Self::Rotate => "rotate",
            Self::Reconnect => "reconnect",
        }
    }

    const fn done(self) -> &'static str {
        match self {
            Self::Revoke => "revoked",
            Self::Rotate => "rotated",
            Self::Reconnect => "reconnected",
        }
    }

    fn label(self, lang: Lang) -> &'static str {
        match self {
            Self::Revoke => lang.pick("吊销", "Revoke"),
            Self::Rotate => lang.pick("轮换令牌", "Rotate token"),
            Self::Reconnect => lang.pick("重新连接码", "Reconnect code"),
        }
    }

    fn question(self, lang: Lang) -> &'static str {
        match self {
            Self::Revoke => lang.pick("吊销这台设备？", "Revoke this device?"),
            Self::Rotate => lang.pick("轮换这台设备的令牌？", "Rotate this device's token?"),
            Self::Reconnect => lang.pick(
                "为这台设备生成重新连接码？",
                "Make a reconnect code for this device?",
            ),
        }
    }

    fn consequence(self, lang: Lang) -> &'static str {
        match self {
            Self::Revoke => lang.pick(
                "设备将无法再同步；下次连接时会清除本机数据，尚未同步的内容也会丢失。此操作无法撤销。",
                "The device can no longer sync. At its next connection it wipes its local data, \
                 including anything not yet synced. This cannot be undone.",
            ),
            Self::Rotate => lang.pick(
                "设备当前的令牌立即失效。设备不会被清除，尚未同步的内容保留在设备上；在设备上输入重新连接码后即可再次同步。",
                "The device's current token stops working now. The device is not wiped: what it \
                 has not synced stays on it, and it syncs again once it is given a reconnect code.",
            ),
            Self::Reconnect => lang.pick(
                "生成一个只能由这台设备使用的一次性代码，有效期7天。在设备上输入后，它保留原设备号和尚未同步的内容，并获得新令牌；之前的令牌随即失效。",
                "Makes a one-time code that only this device can use, valid for 7 days. Entered \
                 on the device, it keeps its device id and everything it has not synced, and \
                 gets a new token; the previous one stops working.",
            ),
        }
    }

    fn done_note(self, lang: Lang) -> &'static str {
        match self {
            Self::Revoke => lang.pick("设备已吊销。", "Device revoked."),
            Self::Rotate => lang.pick("令牌已轮换。", "Token rotated."),
            Self::Reconnect => lang.pick("重新连接码已生成。", "Reconnect code made."),
        }
    }
}

/// The device of a confirmation or an action, if this viewer may manage it.
async fn managed_device(state: &AppState, user: WebUser, id: &str) -> Result<FleetDevice> {
    let viewer = viewer(user);
    viewer.scope()?;
    let id = Uuid::parse_str(id).map_err(|_| Error::InvalidInput("malformed device id".into()))?;
    let device = state
        .store
        .fleet_device(id)
        .await?
        .ok_or_else(|| Error::not_found("device", id))?;
    if !viewer.may_manage(&device) {
        return Err(Error::Forbidden(
            "venue staff manage only their own venue's gate devices",
        ));
    }
    Ok(device)
}

async fn confirm_page(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    params: std::result::Result<Query<FleetParams>, QueryRejection>,
) -> Result<Response> {
    let action = Action::parse(&action)?;
    let Query(params) = params.map_err(|_| Error::InvalidInput("malformed query string".into()))?;
    let lang = Lang::preferred(params.lang.as_deref(), &headers);
    // The filters the page had, to go back to after the action.
    let filter = params.filter()?;
    let device = managed_device(&state, user, &id).await?;
    let token = form_token(&headers).unwrap_or_default();
    let html = render_confirm(lang, action, &device, &token, filter, now_ms());
    Ok(page::html(
        StatusCode::OK,
        Policy::InlineStyle,
        Caching::NoStore,
        html,
    ))
}

#[derive(Deserialize)]
struct ActionForm {
    form_token: String,
    #[serde(flatten)]
    back: FleetParams,
}

async fn act(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    form: std::result::Result<Form<ActionForm>, FormRejection>,
) -> Result<Response> {
    let action = Action::parse(&action)?;
    let Form(form) = form.map_err(|_| Error::InvalidInput("malformed form".into()))?;
    if !form_is_genuine(&headers, &form.form_token) {
        return Err(Error::Forbidden(
            "this form is not from this page; load the page again",
        ));
    }
    let device = managed_device(&state, user, &id).await?;
    let device_id = DeviceId(device.id);
    let lang = Lang::preferred(form.back.lang.as_deref(), &headers);
    let filter = form.back.filter().unwrap_or_default();
    if action == Action::Reconnect {
        if device.revoked_at.is_some() {
            return Err(Error::Conflict("the device is revoked".into()));
        }
        let issued = state
            .accounts
            .issue_device_code(device_id, crate::accounts::DEFAULT_CODE_TTL_DAYS)
            .await?;
        let html = render_code(
            lang,
            &device,
            issued.code.expose(),
            issued.expires_at,
            filter,
        );
        return Ok(page::html(
            StatusCode::OK,
            Policy::InlineStyle,
            Caching::NoStore,
            html,
        ));
    }
    match action {
        Action::Revoke => {
            state.authenticator().revoke(device_id).await?;
        }
        Action::Rotate => {
            if device.revoked_at.is_some() {
                return Err(Error::Conflict("the device is revoked".into()));
            }
            state.accounts.rotate_token_away(device_id).await?;
        }
        Action::Reconnect => {}
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    let to = format!(
        "/fleet{}&done={}",
        fleet_query(lang, filter).replace("&amp;", "&"),
        action.done()
    );
    if let Ok(v) = HeaderValue::from_str(&to) {
        response.headers_mut().insert(LOCATION, v);
    }
    Ok(response)
}

const STYLE: &str = "body{font-family:system-ui,'Noto Sans CJK SC','Microsoft YaHei',sans-serif;\
margin:0;color:#1d2733;background:#f3f6f9}header.top{display:flex;flex-wrap:wrap;gap:.5rem 1rem;\
align-items:baseline;justify-content:space-between;padding:.8rem 1rem;background:#fff;\
border-bottom:1px solid #d8e0e8}h1{font-size:1.3rem;margin:0}.sub{margin:.2rem 0 0;color:#52606d;\
font-size:.9rem}.tools{display:flex;gap:.8rem;align-items:center}.tools form{margin:0}\
main{padding:1rem;max-width:90rem;margin:0 auto}form.filters{display:flex;flex-wrap:wrap;gap:.6rem 1.2rem;\
align-items:center;background:#fff;padding:.7rem 1rem;border-radius:8px;margin-bottom:.8rem}\
form.filters input[type=number]{width:4.5rem;padding:.3rem;font-size:1rem}\
button,.btn{font:inherit;padding:.35rem .8rem;border-radius:6px;border:1px solid #0b6bcb;\
background:#0b6bcb;color:#fff;text-decoration:none;display:inline-block;cursor:pointer}\
.btn.quiet,button.quiet{background:#fff;color:#0b6bcb}.btn.danger,button.danger{background:#b00020;\
border-color:#b00020;color:#fff}.note{background:#e6f4ea;border:1px solid #9ccca8;padding:.5rem .8rem;\
border-radius:6px}.summary{color:#52606d;margin:.4rem 0}table{border-collapse:collapse;width:100%;\
background:#fff;border-radius:8px;overflow:hidden}th,td{text-align:left;padding:.45rem .6rem;\
border-bottom:1px solid #e4e9ee;vertical-align:top;font-size:.92rem}th{background:#eef2f6}\
code{font-size:.85rem}ul.codes{list-style:none;margin:0;padding:0}.badge{display:inline-block;\
padding:0 .4rem;border-radius:4px;font-size:.8rem;background:#fde7e9;color:#8a1020}\
.ok{color:#1e7b34}.revoked{color:#8a1020;font-weight:600}.muted{color:#7b8794}.actions{white-space:nowrap}\
.actions .btn{margin:0 .2rem .2rem 0}.confirm{background:#fff;max-width:34rem;margin:1rem auto;\
padding:1.2rem;border-radius:10px}.confirm dl{display:grid;grid-template-columns:max-content 1fr;\
gap:.3rem 1rem}.confirm dd{margin:0}\
@media (max-width:720px){table,tbody,tr,td{display:block;width:auto}thead{display:none}\
tr{margin:0 0 .8rem;border:1px solid #d8e0e8;border-radius:8px;background:#fff}\
td{border:0;padding:.3rem .7rem;display:flex;gap:.6rem}td::before{content:attr(data-label);\
flex:0 0 7.5rem;color:#52606d}td.actions{padding:.5rem .7rem;flex-wrap:wrap;white-space:normal}td.actions::before{content:none}}";

fn role_name(lang: Lang, role: Role) -> &'static str {
    match role {
        Role::Pupil => lang.pick("学生", "Pupil"),
        Role::Volunteer => lang.pick("小小科普辅导员", "Volunteer"),
        Role::Teacher => lang.pick("教师", "Teacher"),
        Role::VenueStaff => lang.pick("场馆工作人员", "Venue staff"),
        Role::BureauAdmin => lang.pick("管理员", "Administrator"),
        Role::Server => lang.pick("服务器", "Server"),
    }
}

/// A time in China Standard Time, `YYYY-MM-DD HH:MM`.
fn china_time(unix_ms: i64) -> String {
    let local = unix_ms + CHINA_UTC_OFFSET_MS;
    let (y, m, d) = civil_from_days(local.div_euclid(DAY_MS));
    let minutes = local.rem_euclid(DAY_MS) / 60_000;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        minutes / 60,
        minutes % 60
    )
}

/// How long ago, in the page's language.
fn ago(lang: Lang, then: i64, now: i64) -> String {
    let minutes = (now - then).max(0) / 60_000;
    match (lang, minutes) {
        (Lang::Zh, 0) => "刚刚".into(),
        (Lang::En, 0) => "just now".into(),
        (Lang::Zh, m) if m < 60 => format!("{m} 分钟前"),
        (Lang::En, m) if m < 60 => format!("{m} min ago"),
        (Lang::Zh, m) if m < 48 * 60 => format!("{} 小时前", m / 60),
        (Lang::En, m) if m < 48 * 60 => format!("{} h ago", m / 60),
        (Lang::Zh, m) => format!("{} 天前", m / (24 * 60)),
        (Lang::En, m) => format!("{} days ago", m / (24 * 60)),
    }
}

fn place(device: &FleetDevice) -> String {
    device
        .venue
        .as_deref()
        .or(device.school.as_deref())
        .map_or_else(|| "–".to_owned(), esc)
}

/// The short id the live dashboard shows too (the end of the uuid: its start is a time).
fn short_id(id: Uuid) -> String {
    crate::live::short_device(&id.to_string())
}

fn render_fleet(
    lang: Lang,
    viewer: Viewer,
    filter: Filter,
    fleet: &Fleet,
    done: Option<Action>,
    now: i64,
) -> String {
    let scope = if viewer.role == Role::BureauAdmin {
        lang.pick("全部设备", "Every device")
    } else {
        lang.pick("本馆闸机设备", "Your venue's gate devices")
    };
    let this = fleet_query(lang, filter);
    let switch = lang.switch_link(&fleet_query(lang.other(), filter));
    let header = format!(
        "<div><h1>{title}</h1><p class=\"sub\">{scope}</p></div><div class=\"tools\">{switch}\
         <form method=\"post\" action=\"/logout\"><button type=\"submit\" class=\"quiet\">{logout}</button></form></div>",
        title = lang.pick("设备管理", "Fleet"),
        logout = lang.pick("退出", "Log out"),
    );
    let mut m = String::with_capacity(4096 + fleet.devices.len() * 900);
    if let Some(action) = done {
        m.push_str(&format!(
            "<p class=\"note\" role=\"status\">{}</p>",
            action.done_note(lang)
        ));
    }
    let minimums = if fleet.minimums.is_empty() {
        lang.pick("未设置", "none set").to_owned()
    } else {
        fleet
            .minimums
            .iter()
            .map(|(role, v)| format!("{} {}", role_name(lang, *role), esc(v)))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    m.push_str(&format!(
        "<p class=\"summary\" id=\"minimums\">{}: {minimums}</p>",
        lang.pick("最低应用版本", "Minimum app versions")
    ));
    m.push_str(&format!(
        "<form method=\"get\" action=\"/fleet\" class=\"filters\" id=\"filters\">\
         <input type=\"hidden\" name=\"lang\" value=\"{code}\">\
         <label>{stale_a} <input type=\"number\" name=\"stale\" min=\"1\" max=\"{MAX_STALE_DAYS}\" value=\"{stale}\" inputmode=\"numeric\"> {stale_b}</label>\
         <label><input type=\"checkbox\" name=\"below\" value=\"1\"{below}> {below_l}</label>\
         <label><input type=\"checkbox\" name=\"refusals\" value=\"1\"{refused}> {refused_l}</label>\
         <button type=\"submit\">{apply}</button> <a class=\"btn quiet\" href=\"/fleet?lang={code}\">{clear}</a></form>",
        code = lang.code(),
        stale_a = lang.pick("超过", "Not synced for"),
        stale_b = lang.pick("天未同步", "days"),
        stale = filter.stale_days.map_or_else(String::new, |d| d.to_string()),
        below = if filter.below_minimum { " checked" } else { "" },
        below_l = lang.pick("低于最低版本", "Below minimum version"),
        refused = if filter.has_refusals { " checked" } else { "" },
        refused_l = lang.pick("有被拒绝的更改", "Has refusals"),
        apply = lang.pick("筛选", "Filter"),
        clear = lang.pick("清除", "Clear"),
    ));
    let shown = fleet.devices.len();
    let more = if fleet.truncated { "+" } else { "" };
    m.push_str(&format!(
        "<p class=\"summary\" id=\"count\" data-shown=\"{shown}\" data-matching=\"{matching}\">{}</p>",
        match lang {
            Lang::Zh => format!("显示 {shown} 台，共 {}{more} 台设备", fleet.matching),
            Lang::En => format!("Showing {shown} of {}{more} devices", fleet.matching),
        },
        matching = fleet.matching,
    ));
    let labels = [
        lang.pick("设备", "Device"),
        lang.pick("角色", "Role"),
        lang.pick("学校或场馆", "School or venue"),
        lang.pick("应用版本", "App version"),
        lang.pick("最近同步", "Last sync"),
        lang.pick("待发送更改", "Changes waiting"),
        lang.pick("近 30 天被拒绝", "Refusals (30 days)"),
        lang.pick("状态", "Status"),
    ];
    m.push_str("<table id=\"fleet\"><thead><tr>");
    for l in labels {
        m.push_str(&format!("<th scope=\"col\">{l}</th>"));
    }
    m.push_str(&format!(
        "<th scope=\"col\">{}</th></tr></thead><tbody>",
        lang.pick("操作", "Actions")
    ));
    for d in &fleet.devices {
        render_row(&mut m, lang, &labels, d, &this, now);
    }
    m.push_str("</tbody></table>");
    if shown == 0 {
        m.push_str(&format!(
            "<p class=\"summary\">{}</p>",
            lang.pick("没有符合条件的设备。", "No device matches.")
        ));
    }
    Shell {
        lang,
        title: lang.pick("设备管理", "Fleet"),
        style: Style::Inline(STYLE),
        header: Some(&header),
        main: &m,
        footer: None,
    }
    .render()
}

fn render_row(m: &mut String, lang: Lang, labels: &[&str; 8], d: &DeviceView, q: &str, now: i64) {
    let dev = &d.device;
    let id = dev.id;
    let version = match (&dev.app_version, d.below_minimum) {
        (Some(v), below) => format!(
            "{}{}",
            esc(v),
            if below {
                format!(
                    " <span class=\"badge\">{}</span>",
                    lang.pick("过低", "too old")
                )
            } else {
                String::new()
            }
        ),
        (None, true) => format!(
            "<span class=\"muted\">{}</span> <span class=\"badge\">{}</span>",
            lang.pick("未知", "unknown"),
            lang.pick("过低", "too old")
        ),
        (None, false) => format!(
            "<span class=\"muted\">{}</span>",
            lang.pick("未知", "unknown")
        ),
    };
    let last = dev.last_sync_at.map_or_else(
        || {
            format!(
                "<span class=\"muted\">{}</span>",
                lang.pick("从未", "never")
            )
        },
        |t| {
            format!(
                "<time title=\"{}\">{}</time>",
                china_time(t),
                ago(lang, t, now)
            )
        },
    );
    let waiting = dev.pending_changes.map_or_else(
        || "<span class=\"muted\">–</span>".to_owned(),
        |n| n.to_string(),
    );
    let mut refusals = String::from("<ul class=\"codes\">");
    for t in &d.refusals {
        refusals.push_str(&format!(
            "<li><code>{}</code> ×{}</li>",
            esc(t.code.as_str()),
            t.count
        ));
    }
    if dev.pending_refusals > 0 {
        refusals.push_str(&format!(
            "<li class=\"muted\">{} {}</li>",
            lang.pick("未确认", "unacknowledged"),
            dev.pending_refusals
        ));
    }
    refusals.push_str("</ul>");
    let status = dev.revoked_at.map_or_else(
        || format!("<span class=\"ok\">{}</span>", lang.pick("正常", "Active")),
        |t| {
            format!(
                "<span class=\"revoked\">{}</span> <time class=\"muted\">{}</time>",
                lang.pick("已吊销", "Revoked"),
                china_time(t)
            )
        },
    );
    let actions = if dev.revoked_at.is_some() {
        String::new()
    } else {
        format!(
            "<a class=\"btn danger\" href=\"/fleet/devices/{id}/revoke{q}\">{}</a>\
             <a class=\"btn quiet\" href=\"/fleet/devices/{id}/rotate{q}\">{}</a>\
             <a class=\"btn quiet\" href=\"/fleet/devices/{id}/reconnect{q}\">{}</a>",
            Action::Revoke.label(lang),
            Action::Rotate.label(lang),
            Action::Reconnect.label(lang),
        )
    };
    let cells = [
        format!("<code title=\"{id}\">{}</code>", short_id(id)),
        role_name(lang, dev.role).to_owned(),
        place(dev),
        version,
        last,
        waiting,
        refusals,
        status,
    ];
    m.push_str(&format!(
        "<tr data-device=\"{id}\" data-revoked=\"{}\">",
        dev.revoked_at.is_some()
    ));
    for (label, cell) in labels.iter().zip(cells) {
        m.push_str(&format!("<td data-label=\"{label}\">{cell}</td>"));
    }
    m.push_str(&format!("<td class=\"actions\">{actions}</td></tr>"));
}

fn render_confirm(
    lang: Lang,
    action: Action,
    dev: &FleetDevice,
    token: &str,
    filter: Filter,
    now: i64,
) -> String {
    let id = dev.id;
    let code = lang.code();
    let back = format!("/fleet{}", fleet_query(lang, filter));
    let mut kept = String::new();
    if let Some(d) = filter.stale_days {
        kept.push_str(&format!(
            "<input type=\"hidden\" name=\"stale\" value=\"{d}\">"
        ));
    }
    for (on, name) in [
        (filter.below_minimum, "below"),
        (filter.has_refusals, "refusals"),
    ] {
        if on {
            kept.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"1\">"
            ));
        }
    }
    let header = format!(
        "<div><h1>{}</h1></div><div class=\"tools\">{}</div>",
        lang.pick("设备管理", "Fleet"),
        lang.switch_link(&format!(
            "/fleet/devices/{id}/{}{}",
            action.path(),
            fleet_query(lang.other(), filter)
        )),
    );
    let facts = format!(
        "<dl><dt>{}</dt><dd><code>{id}</code></dd><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd>\
         <dt>{}</dt><dd>{}</dd></dl>",
        lang.pick("设备", "Device"),
        lang.pick("角色", "Role"),
        role_name(lang, dev.role),
        lang.pick("学校或场馆", "School or venue"),
        place(dev),
        lang.pick("最近同步", "Last sync"),
        dev.last_sync_at.map_or_else(
            || lang.pick("从未", "never").to_owned(),
            |t| format!("{} ({})", china_time(t), ago(lang, t, now))
        ),
    );
    let body = if dev.revoked_at.is_some() {
        format!(
            "<p class=\"revoked\">{}</p><p><a class=\"btn quiet\" href=\"{back}\">{}</a></p>",
            lang.pick("这台设备已被吊销。", "This device is already revoked."),
            lang.pick("返回", "Back"),
        )
    } else {
        format!(
            "<p>{consequence}</p><form method=\"post\" action=\"/fleet/devices/{id}/{path}\">\
             <input type=\"hidden\" name=\"form_token\" value=\"{token}\">\
             <input type=\"hidden\" name=\"lang\" value=\"{code}\">{kept}\
             <button type=\"submit\" class=\"{class}\" id=\"confirm\">{label}</button> \
             <a class=\"btn quiet\" href=\"{back}\">{cancel}</a></form>",
            consequence = action.consequence(lang),
            path = action.path(),
            token = esc(token),
            class = if action == Action::Revoke {
                "danger"
            } else {
                ""
            },
            label = action.label(lang),
            cancel = lang.pick("取消", "Cancel"),
        )
    };
    let main = format!(
        "<section class=\"confirm\"><h2>{}</h2>{facts}{body}</section>",
        action.question(lang)
    );
    Shell {
        lang,
        title: action.question(lang),
        style: Style::Inline(STYLE),
        header: Some(&header),
        main: &main,
        footer: None,
    }
    .render()
}

/// The page that shows a reconnect code once (it is stored only as a hash).
fn render_code(
    lang: Lang,
    dev: &FleetDevice,
    code: &str,
    expires_at: i64,
    filter: Filter,
) -> String {
    let back = format!("/fleet{}", fleet_query(lang, filter));
    let header = format!("<div><h1>{}</h1></div>", lang.pick("设备管理", "Fleet"));
    let main = format!(
        "<section class=\"confirm\"><h2>{title}</h2><p>{how}</p>\
         <p><code id=\"reconnect-code\">{code}</code></p>\
         <dl><dt>{device}</dt><dd><code>{id}</code></dd><dt>{until}</dt><dd>{expires}</dd></dl>\
         <p class=\"muted\">{once}</p><p><a class=\"btn quiet\" href=\"{back}\">{back_label}</a></p>\
         </section>",
        title = Action::Reconnect.done_note(lang),
        how = lang.pick(
            "请在这台设备的应用中输入此代码（“重新连接”）。设备保留原设备号和尚未同步的内容。",
            "Enter this code in the app on this device (\u{201c}Reconnect\u{201d}). The device keeps \
             its device id and everything it has not synced.",
        ),
        code = esc(code),
        device = lang.pick("设备", "Device"),
        id = dev.id,
        until = lang.pick("有效期至", "Valid until"),
        expires = china_time(expires_at),
        once = lang.pick(
            "此代码只显示这一次。",
            "This code is shown only this once.",
        ),
        back_label = lang.pick("返回", "Back"),
    );
    Shell {
        lang,
        title: Action::Reconnect.done_note(lang),
        style: Style::Inline(STYLE),
        header: Some(&header),
        main: &main,
        footer: None,
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_china_time_and_as_an_age() {
        // 2026-11-30 20:42 UTC is 2026-12-01 04:42 in China.
        let t = 1_796_071_320_000;
        assert_eq!(china_time(t), "2026-12-01 04:42");
        assert_eq!(ago(Lang::En, t, t + 30_000), "just now");
        assert_eq!(ago(Lang::En, t, t + 5 * 60_000), "5 min ago");
        assert_eq!(ago(Lang::Zh, t, t + 3 * 3_600_000), "3 小时前");
        assert_eq!(ago(Lang::En, t, t + 9 * DAY_MS), "9 days ago");
        assert_eq!(ago(Lang::En, t + 1, t), "just now");
    }

    #[test]
    fn bad_filters_are_refused_and_good_ones_survive_the_language_switch() {
        let p = |stale: &str| FleetParams {
            stale: Some(stale.into()),
            ..FleetParams::default()
        };
        for bad in ["0", "-1", "abc", "3651", "1e3", "99999999999"] {
            assert!(p(bad).filter().is_err(), "{bad}");
        }
        assert_eq!(p(" 7 ").filter().ok().and_then(|f| f.stale_days), Some(7));
        let filter = Filter {
            stale_days: Some(7),
            below_minimum: true,
            has_refusals: false,
        };
        assert_eq!(
            fleet_query(Lang::En, filter),
            "?lang=en&amp;stale=7&amp;below=1"
        );
    }
}
