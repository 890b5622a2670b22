//! The web side: a browser's login (session cookie), JSON pages, the live dashboard's
//! Server-Sent Events, and a bureau administrator's device calling the admin API.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::within;

/// A logged-in browser.
pub struct WebLogin {
    base: String,
    cookie: String,
    http: reqwest::Client,
}

impl WebLogin {
    /// Logs in through `POST /api/session` and keeps the session cookie.
    ///
    /// # Panics
    /// The login is refused.
    pub async fn log_in(base: &str, login: &str, password: &str) -> Self {
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{base}/api/session"))
            .json(&serde_json::json!({ "login": login, "password": password }))
            .send()
            .await
            .expect("log in");
        assert!(
            response.status().is_success(),
            "login refused: {}",
            response.status()
        );
        let cookie = response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("kepu_session="))
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_owned();
        Self {
            base: base.to_owned(),
            cookie,
            http,
        }
    }

    /// `GET path` as JSON.
    ///
    /// # Panics
    /// Not 200 or not JSON.
    pub async fn json(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .expect("GET");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert!(status.is_success(), "GET {path}: {status} {text}");
        serde_json::from_str(&text).expect("JSON")
    }

    /// Opens an event stream (`text/event-stream`) and reads its `data:` payloads.
    ///
    /// # Panics
    /// Not 200.
    pub async fn events(&self, path: &str) -> EventStream {
        let mut response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .expect("open the event stream");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    let data: String = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect::<Vec<_>>()
                        .join("\n");
                    if let Ok(value) = serde_json::from_str::<Value>(&data)
                        && tx.send(value).is_err()
                    {
                        return;
                    }
                }
            }
        });
        EventStream { rx, task }
    }
}

/// The events of one open stream, in order.
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl EventStream {
    /// Waits for the first event that `check` accepts; fails naming `what`.
    ///
    /// # Panics
    /// None arrives within 20 s.
    pub async fn until(&mut self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = None;
        let found = within(Duration::from_secs(20), async {
            while let Some(event) = self.rx.recv().await {
                if check(&event) {
                    return Some(event);
                }
                last = Some(event);
            }
            None
        })
        .await;
        match found {
            Some(Some(event)) => event,
            _ => panic!("no event with {what}; the last one was {last:#?}"),
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A bureau administrator's device (enrolled over HTTP, as the bureau's console does).
pub struct AdminDevice {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminDevice {
    /// Enrolls with a one-time code through `POST /api/enroll`.
    ///
    /// # Panics
    /// The code is refused.
    pub async fn enroll(base: &str, code: &str) -> Self {
        let http = reqwest::Client::new();
        let body: Value = http
            .post(format!("{base}/api/enroll"))
            .json(&serde_json::json!({ "code": code }))
            .send()
            .await
            .expect("enroll")
            .error_for_status()
            .expect("enrollment accepted")
            .json()
            .await
            .expect("JSON");
        Self {
            base: base.to_owned(),
            token: body["token"].as_str().expect("a token").to_owned(),
            http,
        }
    }

    /// `POST path` with the device's token; returns the status and the JSON body.
    ///
    /// # Panics
    /// No answer.
    pub async fn post(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}
