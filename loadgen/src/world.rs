//! Targets and the world a run plays in: venues, schools, enrolled devices, venue
//! documents with a slot and one teacher's booking per venue.
//!
//! Against kepu-server everything is created through the HTTP API with a bureau
//! administrator's device (enrolled from a one-time code), and every simulated device is
//! enrolled with `POST /api/enroll`. Against the JavaScript peer, which has no accounts,
//! the same identities are made up locally; the documents are built the same way.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{StreamExt, TryStreamExt};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::writer::{Role, Writer};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::conn::{Conn, Counters};
use crate::device::{Device, Identity, fresh_id, now_ms, random_uuid};

/// Which kind of server a run talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// kepu-server: authenticated, validating, persisting before it acknowledges.
    Kepu,
    /// A plain automerge-repo (JavaScript) sync server.
    Js,
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Kind of server.
    pub kind: TargetKind,
    /// Websocket URL (`ws://host:port/sync` for kepu, `ws://host:port` for the JS peer).
    pub url: String,
    /// A bureau administrator's one-time enrollment code (kepu only).
    pub admin_code: Option<String>,
    /// Websocket URLs of more nodes of the same server (several kepu-server processes on
    /// one PostgreSQL database); devices are spread over `url` and these.
    pub nodes: Vec<String>,
}

impl Target {
    /// How many nodes devices are spread over (`url` and `nodes`).
    #[must_use]
    pub fn node_count(&self) -> usize {
        1 + self.nodes.len()
    }

    /// This target with the websocket URL of node `i` (counted from 0, `url` first;
    /// beyond the last node, counting starts again).
    #[must_use]
    pub fn on_node(&self, i: usize) -> Self {
        let i = i % self.node_count();
        let mut t = self.clone();
        if i > 0 {
            t.url = self.nodes[i - 1].clone();
        }
        t
    }

    /// The HTTP base URL of a kepu server (`ws://h:p/sync` → `http://h:p`).
    ///
    /// # Errors
    /// The URL is not `ws://` or `wss://`.
    pub fn http_base(&self) -> anyhow::Result<String> {
        let (scheme, rest) = if let Some(r) = self.url.strip_prefix("ws://") {
            ("http", r)
        } else if let Some(r) = self.url.strip_prefix("wss://") {
            ("https", r)
        } else {
            bail!("the URL must start with ws:// or wss://");
        };
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() {
            bail!("the URL has no host");
        }
        Ok(format!("{scheme}://{host}"))
    }
}

/// How many HTTP requests provisioning runs at once.
const HTTP_PARALLEL: usize = 16;

/// Creates places and identities on the target.
pub struct Provisioner {
    kind: TargetKind,
    http: reqwest::Client,
    base: String,
    admin_token: String,
    county: Uuid,
}

impl Provisioner {
    /// Enrolls the administrator (kepu) and creates a city and county for the run.
    ///
    /// # Errors
    /// Missing admin code, or the server refuses.
    pub async fn new(target: &Target) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("HTTP client")?;
        let mut p = Self {
            kind: target.kind,
            http,
            base: String::new(),
            admin_token: String::new(),
            county: Uuid::nil(),
        };
        if target.kind == TargetKind::Js {
            return Ok(p);
        }
        p.base = target.http_base()?;
        let code = target
            .admin_code
            .as_deref()
            .context("--admin-code is required for --target kepu (see `kepu-server admin create-user --role bureau-admin`)")?;
        let enrolled = p
            .post(
                "/api/enroll",
                &json!({ "code": code, "app_version": "kepu-loadgen" }),
                false,
            )
            .await
            .context("enrolling the administrator device")?;
        if enrolled["role"] != "bureau_admin" {
            bail!(
                "the admin code belongs to a {} user, not a bureau admin",
                enrolled["role"]
            );
        }
        p.admin_token = str_field(&enrolled, "token")?;
        let tag = &random_uuid().simple().to_string()[..8];
        let city = p
            .post(
                "/api/admin/cities",
                &json!({ "name": format!("压测市{tag}") }),
                true,
            )
            .await?;
        let county = p
            .post(
                "/api/admin/counties",
                &json!({ "city_id": str_field(&city, "id")?, "name": format!("压测区{tag}") }),
                true,
            )
            .await?;
        p.county = uuid_field(&county, "id")?;
        Ok(p)
    }

    /// The administrator's bearer token (kepu; empty for the JS peer).
    #[must_use]
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The HTTP base URL (kepu; empty for the JS peer).
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HTTP client.
    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn post(&self, path: &str, body: &Value, admin: bool) -> anyhow::Result<Value> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if admin {
            request = request.bearer_auth(&self.admin_token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("POST {path}: body is not JSON"))?;
        if !status.is_success() {
            bail!("POST {path}: {status}: {}", body["error"]["message"]);
        }
        Ok(body)
    }

    /// `GET path` as the administrator.
    ///
    /// # Errors
    /// Transport failure, a non-2xx status or a non-JSON body.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body: Value = response.json().await.context("body is not JSON")?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", body["error"]["message"]);
        }
        Ok(body)
    }

    /// A new venue and a school that visits it.
    ///
    /// # Errors
    /// The server refuses.
    pub async fn place(&self, n: usize) -> anyhow::Result<(VenueId, SchoolId)> {
        if self.kind == TargetKind::Js {
            return Ok((VenueId(random_uuid()), SchoolId(random_uuid())));
        }
        let county = self.county.to_string();
        let tag = &random_uuid().simple().to_string()[..6];
        let venue = self
            .post(
                "/api/admin/venues",
                &json!({ "county_id": county, "name": format!("科技馆{n}-{tag}"), "kind": "science_museum" }),
                true,
            )
            .await?;
        let school = self
            .post(
                "/api/admin/schools",
                &json!({ "county_id": county, "name": format!("实验小学{n}-{tag}") }),
                true,
            )
            .await?;
        Ok((
            VenueId(uuid_field(&venue, "id")?),
            SchoolId(uuid_field(&school, "id")?),
        ))
    }

    /// A new user of `role` with one enrolled device.
    ///
    /// # Errors
    /// The server refuses.
    pub async fn identity(
        &self,
        role: Role,
        school: Option<SchoolId>,
        venue: Option<VenueId>,
    ) -> anyhow::Result<Identity> {
        if self.kind == TargetKind::Js {
            return Ok(Identity {
                writer: Writer {
                    device: DeviceId(random_uuid()),
                    user: UserId(random_uuid()),
                    role,
                    school,
                    venue,
                    pupil: None,
                },
                token: None,
            });
        }
        let user = self
            .post(
                "/api/admin/users",
                &json!({
                    "role": role.as_str(),
                    "school_id": school.map(|s| s.to_string()),
                    "venue_id": venue.map(|v| v.to_string()),
                }),
                true,
            )
            .await?;
        let user_id = uuid_field(&user, "id")?;
        let code = self
            .post(
                &format!("/api/admin/users/{user_id}/enrollment-codes"),
                &json!({ "days": 1 }),
                true,
            )
            .await?;
        let enrolled = self
            .post(
                "/api/enroll",
                &json!({ "code": str_field(&code, "code")?, "app_version": "kepu-loadgen" }),
                false,
            )
            .await?;
        Ok(Identity {
            writer: Writer {
                device: str_field(&enrolled, "device_id")?
                    .parse()
                    .map_err(|_| anyhow!("malformed device_id"))?,
                user: UserId(user_id),
                role,
                school,
                venue,
                pupil: None,
            },
            token: Some(str_field(&enrolled, "token")?),
        })
    }

    /// `n` identities of `role`, enrolled `HTTP_PARALLEL` at a time.
    ///
    /// # Errors
    /// The first refusal.
    pub async fn identities(
        &self,
        n: usize,
        role: Role,
        school: Option<SchoolId>,
        venue: Option<VenueId>,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<Vec<Identity>> {
        futures_util::stream::iter(0..n)
            .map(|_| async {
                let id = self.identity(role, school, venue).await;
                bar.inc(1);
                id
            })
            .buffered(HTTP_PARALLEL)
            .try_collect()
            .await
    }
}

fn str_field(v: &Value, key: &str) -> anyhow::Result<String> {
    v[key]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("response has no {key}"))
}

fn uuid_field(v: &Value, key: &str) -> anyhow::Result<Uuid> {
    str_field(v, key)?
        .parse()
        .with_context(|| format!("response {key} is not a UUID"))
}

/// One venue of a run: its staff devices, a teacher, one booking and its roster.
pub struct VenueWorld {
    /// The venue.
    pub venue: VenueId,
    /// The visiting school.
    pub school: SchoolId,
    /// The booking document (created by the teacher).
    pub booking: DocumentId,
    /// Pupils on the booking's roster.
    pub roster: Vec<PupilId>,
    /// Venue staff devices, each holding the booking.
    pub staff: Vec<Device>,
}

/// Opens a connection for `device` on `target`.
///
/// # Errors
/// See [`Conn::open`].
pub async fn connect(
    target: &Target,
    device: &Device,
    counters: &Arc<Counters>,
) -> anyhow::Result<Conn> {
    Conn::open(
        &target.url,
        device.id.token.as_deref(),
        device.peer_id(),
        &device.storage_id(),
        Arc::clone(counters),
    )
    .await
}

/// Exchanges messages until `done(device)` holds.
///
/// # Errors
/// Timeout, a closed connection, an `error` from the server or a bad message.
pub async fn sync_until(
    device: &mut Device,
    conn: &mut Conn,
    timeout: Duration,
    done: impl Fn(&Device) -> bool,
) -> anyhow::Result<()> {
    let (me, server) = (conn.peer_id.clone(), conn.server_id.clone());
    for m in device.all_outgoing(&me, &server) {
        conn.send(&m).await?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(device) {
        let message = tokio::time::timeout_at(deadline, conn.recv())
            .await
            .map_err(|_| anyhow!("not in sync within {timeout:?}"))??
            .context("the server closed the connection")?;
        let incoming = device.handle(&me, &server, message)?;
        if let Some(e) = incoming.error {
            bail!("server error: {e}");
        }
        for m in &incoming.replies {
            conn.send(m).await?;
        }
        if incoming.unavailable.is_some() && !done(device) {
            // The caller's predicate decides whether "unavailable" is an answer.
            if device.docs.values().any(|r| r.unavailable) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// How long a preparation exchange may take.
pub const PREP_TIMEOUT: Duration = Duration::from_secs(120);

/// Builds `venues` venues, each with `staff` venue-staff devices holding one booking of
/// `roster` pupils for a slot published in the venue document. The devices end offline,
/// holding the booking and the persisted part of their sync state.
///
/// # Errors
/// Provisioning or a preparation sync failed.
pub async fn build(
    target: &Target,
    prov: &Provisioner,
    venues: usize,
    staff: usize,
    roster: usize,
    counters: &Arc<Counters>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<VenueWorld>> {
    let mut out = Vec::with_capacity(venues);
    for v in 0..venues {
        let (venue, school) = prov.place(v).await?;
        let teacher_id = prov.identity(Role::Teacher, Some(school), None).await?;
        let staff_ids = prov
            .identities(staff, Role::VenueStaff, None, Some(venue), bar)
            .await?;
        let mut staff: Vec<Device> = staff_ids.into_iter().map(Device::new).collect();
        let slot = publish_slot(target, &mut staff[0], venue, roster, counters).await?;

        let roster_ids: Vec<PupilId> = (0..roster).map(|_| PupilId(random_uuid())).collect();
        let booking = DocumentId::from_bytes(*random_uuid().as_bytes());
        let mut teacher = Device::new(teacher_id);
        teacher.edit(
            booking,
            &Edit::CreateBooking {
                venue,
                slot,
                school,
                party_size: u32::try_from(roster).unwrap_or(u32::MAX).max(1),
                roster: roster_ids.clone(),
            },
        )?;
        let mut conn = connect(target, &teacher, counters).await?;
        sync_until(&mut teacher, &mut conn, PREP_TIMEOUT, Device::all_in_sync)
            .await
            .context("the teacher's booking")?;
        conn.close().await;

        fetch_all(target, &mut staff, booking, counters).await?;
        out.push(VenueWorld {
            venue,
            school,
            booking,
            roster: roster_ids,
            staff,
        });
    }
    Ok(out)
}

/// Each device fetches `doc` (64 at a time), then keeps only the persisted part of its
/// sync state, as a device that goes offline does.
///
/// # Errors
/// A device did not get the document.
pub async fn fetch_all(
    target: &Target,
    devices: &mut Vec<Device>,
    doc: DocumentId,
    counters: &Arc<Counters>,
) -> anyhow::Result<()> {
    let taken = std::mem::take(devices);
    let fetched: Vec<Device> = futures_util::stream::iter(taken)
        .map(|mut d| async move {
            d.want(doc);
            d.reset_states();
            let mut conn = connect(target, &d, counters).await?;
            sync_until(&mut d, &mut conn, PREP_TIMEOUT, Device::all_in_sync).await?;
            if d.docs.get(&doc).is_some_and(|r| r.unavailable) {
                bail!("the server has no copy of the booking");
            }
            conn.close().await;
            d.persist_states()?;
            anyhow::Ok(d)
        })
        .buffered(64)
        .try_collect()
        .await
        .context("fetching the booking")?;
    *devices = fetched;
    Ok(())
}

/// The start of a slot that is on at `now` (unix ms): at most 30 minutes ago, and on the
/// venue day of `now` (China Standard Time), which is the day whose slots the live
/// dashboard shows. A slot starting an hour later, as this once was, fell on the next
/// venue day between 15:00 and 16:00 UTC, and the dashboards showed none of its arrivals.
fn live_slot_start(now: i64) -> i64 {
    use kepu_sync_core::calendar::{CHINA_UTC_OFFSET_MS, DAY_MS};
    let day_start = (now + CHINA_UTC_OFFSET_MS).div_euclid(DAY_MS) * DAY_MS - CHINA_UTC_OFFSET_MS;
    (now - 1_800_000).max(day_start)
}

/// Gets the venue document on `staff` (a kepu server creates it within seconds of the
/// venue record, and devices may not create it; for the JS peer this device creates it)
/// and publishes a slot of `capacity`.
async fn publish_slot(
    target: &Target,
    staff: &mut Device,
    venue: VenueId,
    capacity: usize,
    counters: &Arc<Counters>,
) -> anyhow::Result<SlotId> {
    let venue_doc = DocumentId::from_bytes(*venue.as_bytes());
    staff.want(venue_doc);
    let mut conn = connect(target, staff, counters).await?;
    sync_until(staff, &mut conn, PREP_TIMEOUT, Device::all_in_sync)
        .await
        .context("requesting the venue document")?;
    let deadline = tokio::time::Instant::now() + PREP_TIMEOUT;
    while target.kind != TargetKind::Js && staff.heads(&venue_doc).is_empty() {
        // Not created yet: ask again on a fresh connection (the unanswered request left
        // the old sync state waiting for a reply).
        if tokio::time::Instant::now() > deadline {
            bail!("the server never created the venue document");
        }
        conn.close().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        staff.reset_states();
        staff.want(venue_doc);
        conn = connect(target, staff, counters).await?;
        sync_until(staff, &mut conn, PREP_TIMEOUT, Device::all_in_sync)
            .await
            .context("requesting the venue document")?;
    }
    if staff.heads(&venue_doc).is_empty() {
        // The JS peer creates nothing itself: this device does (a fresh sync state, as
        // the unanswered request left the old one waiting for a reply).
        staff.reset_states();
        staff.edit(venue_doc, &Edit::CreateVenue { venue })?;
    }
    let slot = SlotId(fresh_id());
    let start = live_slot_start(now_ms());
    staff.edit(
        venue_doc,
        &Edit::PutSlot {
            slot,
            start,
            end: start + 7_200_000,
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            label: "压测".into(),
        },
    )?;
    sync_until(staff, &mut conn, PREP_TIMEOUT, Device::all_in_sync)
        .await
        .context("publishing the slot")?;
    conn.close().await;
    staff.docs.remove(&venue_doc);
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::live_slot_start;
    use kepu_sync_core::calendar::{CHINA_UTC_OFFSET_MS, DAY_MS};
    use kepu_sync_core::rules::attendance::EARLY_ARRIVAL_MS;

    /// The venue day (days since 1970-01-01, China Standard Time) of an instant.
    fn venue_day(ms: i64) -> i64 {
        (ms + CHINA_UTC_OFFSET_MS).div_euclid(DAY_MS)
    }

    #[test]
    fn the_slot_is_on_the_venue_day_of_now_and_check_ins_now_count() {
        // 2026-12-01 at 03:00, 15:30, 15:59, 16:00 and 16:10 UTC (16:00 UTC is midnight
        // in China), and just before midnight in China.
        let midnight_utc = 1_796_083_200_000;
        for hours_ms in [
            3 * 3_600_000,
            15 * 3_600_000 + 1_800_000,
            16 * 3_600_000 - 60_000,
            16 * 3_600_000,
            16 * 3_600_000 + 600_000,
        ] {
            let now = midnight_utc + hours_ms;
            let start = live_slot_start(now);
            assert_eq!(
                venue_day(start),
                venue_day(now),
                "at {hours_ms} ms after midnight UTC"
            );
            assert!(start <= now && now - start <= 1_800_000);
            // A check-in made now is inside the slot's window (two hours long).
            assert!(now >= start - EARLY_ARRIVAL_MS && now <= start + 7_200_000);
        }
    }
}
