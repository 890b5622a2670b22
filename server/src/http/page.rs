//! What every HTML page the server renders shares: the page language ([`Lang`]), the
//! shell around a page's content ([`Shell`]: the document head, an optional header, the
//! main part and an optional footer), the language switch and the response headers
//! ([`respond`]). The pages: the login form (`session.rs`), the programme reports
//! (`reports/html.rs`) and the live venue dashboard (`live.rs`, whose script fills the
//! page in).

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::text::html_escape;

/// The language of a page: Chinese (the default) or English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// 简体中文.
    Zh,
    /// English.
    En,
}

impl Lang {
    /// The code in a `lang=` query value: `zh` or `en`.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Zh => "zh",
            Self::En => "en",
        }
    }

    /// The value of the `<html lang>` attribute.
    #[must_use]
    pub const fn html_lang(self) -> &'static str {
        match self {
            Self::Zh => "zh-CN",
            Self::En => "en",
        }
    }

    /// The language's name in itself, as the switch to it reads.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Zh => "中文",
            Self::En => "English",
        }
    }

    /// The other language: where the language switch leads.
    #[must_use]
    pub const fn other(self) -> Self {
        match self {
            Self::Zh => Self::En,
            Self::En => Self::Zh,
        }
    }

    /// `zh` or `en` in this language.
    #[must_use]
    pub const fn pick<'a>(self, zh: &'a str, en: &'a str) -> &'a str {
        match self {
            Self::Zh => zh,
            Self::En => en,
        }
    }

    /// Exactly `zh` or `en`.
    #[must_use]
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "zh" => Some(Self::Zh),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    /// A reader's language, leniently: an explicit choice (a `lang` value) if there is
    /// one, else the browser's `Accept-Language`; English when it starts with `en`,
    /// Chinese otherwise.
    #[must_use]
    pub fn preferred(explicit: Option<&str>, headers: &HeaderMap) -> Self {
        let pick = |s: &str| {
            if s.trim().to_ascii_lowercase().starts_with("en") {
                Self::En
            } else {
                Self::Zh
            }
        };
        match explicit {
            Some(l) if !l.is_empty() => pick(l),
            _ => headers
                .get(axum::http::header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .map_or(Self::Zh, pick),
        }
    }

    /// The link that switches a page to the other language: `href` is the page's address
    /// in the other language, already escaped for an attribute.
    #[must_use]
    pub fn switch_link(self, href: &str) -> String {
        let other = self.other();
        format!(
            "<a class=\"lang\" href=\"{href}\" hreflang=\"{}\" lang=\"{}\">{}</a>",
            other.html_lang(),
            other.html_lang(),
            other.name()
        )
    }
}

/// How a page is styled.
#[derive(Debug, Clone, Copy)]
pub enum Style<'a> {
    /// A style sheet written into the page (pages without script).
    Inline(&'a str),
    /// The page's own style sheet, script and icon, served by this server (a page that
    /// runs a script: nothing inline, so its policy can forbid inline code).
    Assets {
        /// Path of the style sheet.
        css: &'a str,
        /// Path of the script (loaded deferred).
        script: &'a str,
        /// Path of the SVG icon.
        icon: &'a str,
    },
}

/// One HTML page: the document head, then the body's header, main part and footer. The
/// title is text (escaped here); the header, main part and footer are markup the page
/// wrote, every value in them already escaped.
#[derive(Debug, Clone)]
pub struct Shell<'a> {
    /// The page's language.
    pub lang: Lang,
    /// The title, as text.
    pub title: &'a str,
    /// Its styling.
    pub style: Style<'a>,
    /// Inside `<header class="top">`, if the page has a header.
    pub header: Option<&'a str>,
    /// Inside `<main>`.
    pub main: &'a str,
    /// Inside `<footer class="foot">`, if the page has a footer.
    pub footer: Option<&'a str>,
}

impl Shell<'_> {
    /// The whole document.
    #[must_use]
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(self.main.len() + 2048);
        s.push_str("<!DOCTYPE html>\n<html lang=\"");
        s.push_str(self.lang.html_lang());
        s.push_str(
            "\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"referrer\" content=\"same-origin\">\n<title>",
        );
        s.push_str(&html_escape(self.title));
        s.push_str("</title>\n");
        match self.style {
            Style::Inline(css) => {
                s.push_str("<style>");
                s.push_str(css);
                s.push_str("</style>\n");
            }
            Style::Assets { css, script, icon } => {
                for (open, path, close) in [
                    (
                        "<link rel=\"icon\" href=\"",
                        icon,
                        "\" type=\"image/svg+xml\">\n",
                    ),
                    ("<link rel=\"stylesheet\" href=\"", css, "\">\n"),
                    ("<script src=\"", script, "\" defer></script>\n"),
                ] {
                    s.push_str(open);
                    s.push_str(&html_escape(path));
                    s.push_str(close);
                }
            }
        }
        s.push_str("</head>\n<body>\n");
        if let Some(header) = self.header {
            s.push_str("<header class=\"top\">");
            s.push_str(header);
            s.push_str("</header>\n");
        }
        s.push_str("<main>");
        s.push_str(self.main);
        s.push_str("</main>\n");
        if let Some(footer) = self.footer {
            s.push_str("<footer class=\"foot\">");
            s.push_str(footer);
            s.push_str("</footer>\n");
        }
        s.push_str("</body>\n</html>\n");
        s
    }
}

/// What a page may load and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No script; the page's own inline style sheet; forms post to this server.
    InlineStyle,
    /// Script, style and images from this server only, nothing inline.
    OwnAssets,
}

impl Policy {
    const fn csp(self) -> &'static str {
        match self {
            Self::InlineStyle => {
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                 base-uri 'none'; frame-ancestors 'none'"
            }
            Self::OwnAssets => {
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                 connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
            }
        }
    }
}

/// How long a browser may keep a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Never stored (pages with people's data).
    NoStore,
    /// Stored, but checked again before each use (the dashboard's page and assets).
    Revalidate,
}

/// A page (or one of its assets) with the headers every page gets: its type, its
/// policy, no type sniffing, referrers only to this server, and its caching.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    policy: Policy,
    caching: Caching,
    body: impl IntoResponse,
) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy.csp()),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(match caching {
            Caching::NoStore => "no-store",
            Caching::Revalidate => "no-cache",
        }),
    );
    response
}

/// An HTML page with the headers of [`respond`].
pub fn html(status: StatusCode, policy: Policy, caching: Caching, body: String) -> Response {
    respond(status, "text/html; charset=utf-8", policy, caching, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_comes_from_the_choice_then_the_browser() {
        let mut headers = HeaderMap::new();
        assert_eq!(Lang::preferred(None, &headers), Lang::Zh);
        headers.insert(
            axum::http::header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("en-GB,en;q=0.9"),
        );
        assert_eq!(Lang::preferred(None, &headers), Lang::En);
        assert_eq!(Lang::preferred(Some(""), &headers), Lang::En);
        assert_eq!(Lang::preferred(Some("zh"), &headers), Lang::Zh);
        assert_eq!(Lang::preferred(Some(" EN "), &HeaderMap::new()), Lang::En);
        assert_eq!(Lang::parse("en"), Some(Lang::En));
        assert_eq!(Lang::parse("fr"), None);
        assert_eq!(Lang::parse("EN"), None);
    }

    #[test]
    fn the_shell_escapes_the_title_and_switches_to_the_other_language() {
        let html = Shell {
            lang: Lang::En,
            title: "a <b> & c",
            style: Style::Inline("p{}"),
            header: Some("<h1>x</h1>"),
            main: "<p>body</p>",
            footer: None,
        }
        .render();
        assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
        assert!(html.contains("<title>a &lt;b&gt; &amp; c</title>"));
        assert!(html.contains("<header class=\"top\"><h1>x</h1></header>"));
        assert!(html.contains("<main><p>body</p></main>"));
        assert!(!html.contains("<footer"));
        let link = Lang::Zh.switch_link("/reports?lang=en");
        assert!(link.contains("href=\"/reports?lang=en\"") && link.contains(">English</a>"));
        assert!(Lang::En.switch_link("/x").contains(">中文</a>"));
    }
}
