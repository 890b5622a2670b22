//! Browser sessions: the login page, `POST /login` / `POST /logout`, the JSON variant
//! `/api/session`, and the extractors the web pages and their APIs use:
//! [`WebUser`] (session cookie or device bearer token, else 401) and [`PageUser`] (the
//! same, else a redirect to the login page).

use axum::extract::{FromRequestParts, Query, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::page::{Caching, Lang, Policy, Shell, Style, html};
use super::text::{html_escape as escape, percent_encode};
use crate::accounts::{NewSession, Role, SESSION_TTL_MS};
use crate::app_state::AppState;
use crate::error::{Error, Result};
use crate::limits::ClientAddr;

/// The cookie that carries a browser session.
pub const SESSION_COOKIE: &str = "kepu_session";

/// A logged-in person: from a browser session cookie or a device's bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WebUser {
    /// The user.
    pub user_id: Uuid,
    /// Their role.
    pub role: Role,
    /// Their venue (venue staff).
    pub venue_id: Option<Uuid>,
    /// Their school (teachers, volunteers).
    pub school_id: Option<Uuid>,
}

/// A [`WebUser`] for an HTML page: without a login the page answers with a redirect to
/// `/login?next=<this page>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageUser(pub WebUser);

/// The session token of a request's cookie header, if any.
#[must_use]
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The form token of a request's login: a digest of its session cookie (or bearer
/// token), so a page can put it in its forms and a forged cross-site form cannot know it.
/// `None` without a login.
#[must_use]
pub fn form_token(headers: &HeaderMap) -> Option<String> {
    use sha2::{Digest, Sha256};
    let credential = session_cookie(headers).or_else(|| crate::accounts::bearer_token(headers))?;
    let mut hash = Sha256::new();
    hash.update(b"kepu form token v1\0");
    hash.update(credential.as_bytes());
    Some(hex::encode(hash.finalize()))
}

/// Is a posted form this login's own? Its token must be the login's [`form_token`], and
/// an `Origin` header, if the browser sent one, must be this server (`Host`).
#[must_use]
pub fn form_is_genuine(headers: &HeaderMap, presented: &str) -> bool {
    use sha2::{Digest, Sha256};
    let Some(expected) = form_token(headers) else {
        return false;
    };
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let same = origin.to_str().ok().zip(host).is_some_and(|(o, h)| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .is_some_and(|rest| rest.eq_ignore_ascii_case(h))
        });
        if !same {
            return false;
        }
    }
    // Compared as digests, so the time taken says nothing about the token.
    Sha256::digest(presented.as_bytes()) == Sha256::digest(expected.as_bytes())
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        if let Some(token) = session_cookie(&parts.headers)
            && let Some(s) = state.accounts.session(token).await?
        {
            return Ok(Self {
                user_id: s.user_id,
                role: s.role,
                venue_id: s.venue_id,
                school_id: s.school_id,
            });
        }
        if crate::accounts::bearer_token(&parts.headers).is_some() {
            let d = state
                .authenticator()
                .authenticate_headers(&parts.headers)
                .await?;
            return Ok(Self {
                user_id: d.writer.user.0,
                role: d.writer.role,
                venue_id: d.writer.venue.map(|v| v.0),
                school_id: d.writer.school.map(|s| s.0),
            });
        }
        Err(Error::NotLoggedIn)
    }
}

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Response> {
        match WebUser::from_request_parts(parts, state).await {
            Ok(user) => Ok(Self(user)),
            Err(Error::NotLoggedIn | Error::Auth(_)) => {
                let here = parts
                    .uri
                    .path_and_query()
                    .map_or("/", axum::http::uri::PathAndQuery::as_str);
                Err(redirect(&format!(
                    "/login?next={}",
                    percent_encode(here, b"/")
                )))
            }
            Err(other) => Err(other.into_response()),
        }
    }
}

/// The session routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login_form))
        .route("/logout", post(logout))
        .route(
            "/api/session",
            get(whoami).post(login_json).delete(logout_json),
        )
}

/// Only a clean absolute path on this server may follow a login: it starts with one `/`,
/// and holds only visible ASCII without `\\` (no `//host`, no scheme, no `/\\host`, no
/// tab, newline or other control character, which browsers drop before resolving).
fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
}

fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn session_cookie_header(token: Option<&str>, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = match token {
        Some(t) => format!(
            "{SESSION_COOKIE}={t}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{secure}",
            SESSION_TTL_MS / 1000
        ),
        None => format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Where a person lands after logging in without a `next`.
fn home_of(user: &WebUser) -> String {
    match (user.role, user.venue_id) {
        (Role::VenueStaff, Some(venue)) => format!("/venues/{venue}/live"),
        (Role::BureauAdmin | Role::Teacher, _) => "/reports".to_owned(),
        _ => "/api/session".to_owned(),
    }
}

async fn home(user: PageUser) -> Response {
    redirect(&home_of(&user.0))
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
    lang: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    login: String,
    password: String,
    next: Option<String>,
    lang: Option<String>,
}

const LOGIN_CSS: &str = "body{font-family:system-ui,'Noto Sans CJK SC',sans-serif;margin:0;\
background:#f3f6f9;color:#1d2733}main{max-width:22rem;margin:12vh auto;padding:1.5rem;\
background:#fff;border-radius:12px;box-shadow:0 2px 12px #0002}h1{font-size:1.3rem;margin:0 0 1rem}\
label{display:block;margin:.8rem 0 .3rem;font-size:.9rem}input{width:100%;box-sizing:border-box;\
padding:.6rem;font-size:1rem;border:1px solid #b8c4d0;border-radius:6px}button{margin-top:1.2rem;\
width:100%;padding:.7rem;font-size:1rem;background:#0b6bcb;color:#fff;border:0;border-radius:6px}\
.err{color:#b00020;margin:.5rem 0}.lang{float:right;font-size:.85rem}";

fn login_html(lang: Lang, next: &str, error: Option<&str>) -> String {
    let title = lang.pick("科普场馆登录", "kepu sign in");
    let next_q = percent_encode(next, b"/");
    let switch = lang.switch_link(&format!(
        "/login?lang={}&amp;next={next_q}",
        lang.other().code()
    ));
    let next = escape(next);
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"err\" role=\"alert\">{}</p>", escape(e))
    });
    let main = format!(
        "{switch}<h1>{title}</h1>{error}<form method=\"post\" action=\"/login\">\
<input type=\"hidden\" name=\"next\" value=\"{next}\"><input type=\"hidden\" name=\"lang\" value=\"{code}\">\
<label for=\"login\">{login}</label><input id=\"login\" name=\"login\" autocomplete=\"username\" required autofocus>\
<label for=\"password\">{password}</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">{submit}</button></form>",
        code = lang.code(),
        login = lang.pick("登录名", "Login name"),
        password = lang.pick("密码", "Password"),
        submit = lang.pick("登录", "Sign in"),
    );
    Shell {
        lang,
        title,
        style: Style::Inline(LOGIN_CSS),
        header: None,
        main: &main,
        footer: None,
    }
    .render()
}

fn page(status: StatusCode, body: String) -> Response {
    html(status, Policy::InlineStyle, Caching::NoStore, body)
}

async fn login_page(Query(q): Query<LoginQuery>, headers: HeaderMap) -> Response {
    let lang = Lang::preferred(q.lang.as_deref(), &headers);
    page(
        StatusCode::OK,
        login_html(lang, &local_next(q.next.as_deref()), None),
    )
}

async fn login_form(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = Lang::preferred(form.lang.as_deref(), &headers);
    let next = form.next.as_deref().filter(|n| !n.is_empty());
    match state
        .accounts
        .log_in(&form.login, &form.password, client)
        .await
    {
        Ok(session) => {
            let to = next.map_or_else(|| home_of(&web_user(&session)), |n| local_next(Some(n)));
            let mut response = redirect(&to);
            response.headers_mut().insert(
                SET_COOKIE,
                session_cookie_header(Some(session.token.expose()), is_https(&headers)),
            );
            response
        }
        Err(e @ (Error::LoginFailed | Error::TooManyAttempts | Error::Unavailable(_))) => {
            let status = match e {
                Error::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
                Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            let message = match (lang, &e) {
                (Lang::Zh, Error::TooManyAttempts) => "尝试次数过多，请稍后再试。".to_owned(),
                (Lang::Zh, Error::Unavailable(_)) => "登录人数过多，请稍后再试。".to_owned(),
                (Lang::Zh, _) => "登录名或密码错误。".to_owned(),
                (Lang::En, e) => format!("{}.", capitalize(&e.to_string())),
            };
            page(status, login_html(lang, &local_next(next), Some(&message)))
        }
        Err(other) => other.into_response(),
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_uppercase().chain(chars).collect::<String>()
    })
}

fn web_user(session: &NewSession) -> WebUser {
    WebUser {
        user_id: session.user.user_id,
        role: session.user.role,
        venue_id: session.user.venue_id,
        school_id: session.user.school_id,
    }
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    if let Some(token) = session_cookie(&headers) {
        state.accounts.log_out(token).await?;
    }
    let mut response = redirect("/login");
    response
        .headers_mut()
        .insert(SET_COOKIE, session_cookie_header(None, is_https(&headers)));
    Ok(response)
}

#[derive(Deserialize)]
struct LoginBody {
    login: String,
    password: String,
}

/// Who is logged in, as the JSON session API reports it.
#[derive(Debug, Serialize)]
struct SessionInfo {
    user_id: Uuid,
    role: Role,
    venue_id: Option<Uuid>,
    school_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    home: String,
}

async fn login_json(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    Json(body): Json<LoginBody>,
) -> Result<Response> {
    let session = state
        .accounts
        .log_in(&body.login, &body.password, client)
        .await?;
    let user = web_user(&session);
    let info = SessionInfo {
        user_id: user.user_id,
        role: user.role,
        venue_id: user.venue_id,
        school_id: user.school_id,
        expires_at: Some(session.user.expires_at),
        home: home_of(&user),
    };
    let mut response = Json(info).into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        session_cookie_header(Some(session.token.expose()), is_https(&headers)),
    );
    Ok(response)
}

async fn whoami(user: WebUser) -> Json<SessionInfo> {
    Json(SessionInfo {
        user_id: user.user_id,
        role: user.role,
        venue_id: user.venue_id,
        school_id: user.school_id,
        expires_at: None,
        home: home_of(&user),
    })
}

async fn logout_json(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    if let Some(token) = session_cookie(&headers) {
        state.accounts.log_out(token).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(SET_COOKIE, session_cookie_header(None, is_https(&headers)));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_stay_on_this_server() {
        assert_eq!(
            local_next(Some("/venues/x/live?lang=en")),
            "/venues/x/live?lang=en"
        );
        assert_eq!(local_next(Some("//evil.example/")), "/");
        assert_eq!(local_next(Some("https://evil.example/")), "/");
        assert_eq!(local_next(Some("/\\evil")), "/");
        for hostile in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "/ /evil.example",
            "/\u{0}/evil.example",
            "/x\\..\\evil",
            "\\\\evil.example",
            "/\u{3000}/evil.example",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(local_next(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(local_next(None), "/");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; kepu_session=tok; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("tok"));
        headers.insert(COOKIE, HeaderValue::from_static("kepu_session="));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn text_is_escaped_in_the_login_page() {
        let html = login_html(Lang::En, "/x\"><script>", Some("<b>"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;b&gt;"));
    }
}
