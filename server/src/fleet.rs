//! The fleet (`/fleet`): every enrolled device with its role, place, app version, last
//! sync, changes waiting and recent refusals, for bureau administrators (every device)
//! and a venue's staff (their venue's gate devices only); and the minimum app version per
//! role, below which a device is refused at connect (`app-too-old`) and keeps its work.
//!
//! Nothing here names a person: a device is shown by its id, its user by role and the
//! school's or venue's name.

use std::cmp::Ordering;
use std::collections::HashMap;

use kepu_sync_core::writer::Role;
use uuid::Uuid;

use crate::clock::DAY_MS;
use crate::error::{Error, Result};
use crate::store::{FleetDevice, FleetQuery, RefusalTally, Store};

/// Refusals this recent are shown, and count for "has refusals".
pub const RECENT_REFUSALS_MS: i64 = 30 * DAY_MS;
/// Devices shown on one page at most; the filters narrow a larger fleet.
pub const MAX_SHOWN: usize = 500;
/// Devices read for one page at most (the version filter is applied to these).
pub const MAX_READ: usize = 20_000;
/// The longest "not synced for N days" filter.
pub const MAX_STALE_DAYS: u32 = 3_650;
/// The longest app version accepted (bytes).
pub const MAX_VERSION_LEN: usize = 64;

/// An app version: one to four dot-separated numbers, then optionally `-` and a
/// pre-release label (lower than the release: `1.4.0-beta` < `1.4.0`) and `+` and build
/// metadata (ignored). Missing numbers count as zero: `1.4` = `1.4.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppVersion {
    numbers: [u32; 4],
    pre_release: Option<String>,
}

impl AppVersion {
    /// Parses a version; `None` for anything else (no error text repeats the input).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() || text.len() > MAX_VERSION_LEN {
            return None;
        }
        let text = text.strip_prefix('v').unwrap_or(text);
        let (text, build) = match text.split_once('+') {
            Some((t, b)) => (t, Some(b)),
            None => (text, None),
        };
        let (core, pre) = match text.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (text, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        if pre.is_some_and(|p| !label_ok(p)) || build.is_some_and(|b| !label_ok(b)) {
            return None;
        }
        let mut numbers = [0; 4];
        for (count, part) in core.split('.').enumerate() {
            if count == numbers.len()
                || part.is_empty()
                || part.len() > 9
                || !part.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            numbers[count] = part.parse().ok()?;
        }
        Some(Self {
            numbers,
            pre_release: pre.map(str::to_owned),
        })
    }
}

impl Ord for AppVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.numbers.cmp(&other.numbers).then_with(|| {
            match (&self.pre_release, &other.pre_release) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            }
        })
    }
}

impl PartialOrd for AppVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Is a device that reported `version` below `minimum`? A device that reported no
/// version, or one that is not a version, is: nothing shows it is new enough. A minimum
/// that does not parse (the server never stores one) holds nobody back.
#[must_use]
pub fn below_minimum(version: Option<&str>, minimum: &str) -> bool {
    let Some(minimum) = AppVersion::parse(minimum) else {
        return false;
    };
    version
        .and_then(AppVersion::parse)
        .is_none_or(|v| v < minimum)
}

/// Lets a connecting device in only if its app is at least its role's `minimum` version
/// (read with its identity, ADR 0187). The version is the one it `reported` now, else the
/// last one it reported (`stored`: at enrollment or an earlier connect).
///
/// # Errors
/// [`Error::AppTooOld`] (with the minimum).
pub fn admit_version(
    device: Uuid,
    role: Role,
    minimum: Option<&str>,
    reported: Option<&str>,
    stored: Option<&str>,
) -> Result<()> {
    let Some(minimum) = minimum else {
        return Ok(());
    };
    if below_minimum(reported.or(stored), minimum) {
        tracing::info!(%device, %role, %minimum, "connect refused: app below the minimum version");
        return Err(Error::AppTooOld {
            minimum: minimum.to_owned(),
        });
    }
    Ok(())
}

/// The app version a device reported, if it is one the server keeps: trimmed, at most
/// [`MAX_VERSION_LEN`] bytes, no control characters (it need not parse as a version; one
/// that does not is below every minimum).
#[must_use]
pub fn reported_version(text: &str) -> Option<&str> {
    let text = text.trim();
    (!text.is_empty() && text.len() <= MAX_VERSION_LEN && !text.chars().any(char::is_control))
        .then_some(text)
}

/// The number of changes waiting on a device, as it reported them (a decimal count up to
/// a billion; anything else is ignored).
#[must_use]
pub fn reported_pending(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok().filter(|n| *n <= 1_000_000_000)
}

/// Sets or clears a role's minimum app version (`kepu-server admin min-version` and
/// `PUT /api/admin/min-app-versions/{role}`). Returns the version as stored.
///
/// # Errors
/// A version that does not parse, or a database failure.
pub async fn set_minimum(
    store: &Store,
    role: Role,
    version: Option<&str>,
    now: i64,
) -> Result<Option<String>> {
    let version = version.map(str::trim).filter(|v| !v.is_empty());
    if let Some(v) = version
        && AppVersion::parse(v).is_none()
    {
        return Err(Error::InvalidInput(
            "a version is one to four dot-separated numbers, e.g. 1.4.2 or 1.5.0-beta.1".into(),
        ));
    }
    store.set_min_app_version(role, version, now).await?;
    tracing::info!(role = %role, version = version.unwrap_or("none"), "minimum app version set");
    Ok(version.map(str::to_owned))
}

/// Who is looking at the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// Their role.
    pub role: Role,
    /// Their venue (venue staff).
    pub venue_id: Option<Uuid>,
}

impl Viewer {
    /// The venue whose gate devices this viewer sees (`None`: every device).
    ///
    /// # Errors
    /// [`Error::Forbidden`] for anyone but bureau administrators and a venue's staff.
    pub fn scope(self) -> Result<Option<Uuid>> {
        match (self.role, self.venue_id) {
            (Role::BureauAdmin, _) => Ok(None),
            (Role::VenueStaff, Some(venue)) => Ok(Some(venue)),
            _ => Err(Error::Forbidden(
                "only bureau administrators and venue staff see the fleet",
            )),
        }
    }

    /// May this viewer see, revoke and rotate `device`?
    #[must_use]
    pub fn may_manage(self, device: &FleetDevice) -> bool {
        match self.scope() {
            Ok(None) => true,
            Ok(Some(venue)) => device.role == Role::VenueStaff && device.venue_id == Some(venue),
            Err(_) => false,
        }
    }
}

/// The page's filters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only devices not synced for this many days (never synced included).
    pub stale_days: Option<u32>,
    /// Only devices below their role's minimum version.
    pub below_minimum: bool,
    /// Only devices refused in the last [`RECENT_REFUSALS_MS`].
    pub has_refusals: bool,
}

/// One device on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    /// The device.
    pub device: FleetDevice,
    /// Below its role's minimum app version.
    pub below_minimum: bool,
    /// Its recent refusals per code, most frequent first.
    pub refusals: Vec<RefusalTally>,
}

/// What the page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// The devices shown (at most [`MAX_SHOWN`]), silent longest first.
    pub devices: Vec<DeviceView>,
    /// How many devices matched the filters (of those read).
    pub matching: usize,
    /// True when more devices than [`MAX_READ`] matched the other filters: the counts
    /// cover the first [`MAX_READ`].
    pub truncated: bool,
    /// The minimum app version of each role that has one.
    pub minimums: Vec<(Role, String)>,
}

/// The fleet `viewer` may see, filtered.
///
/// # Errors
/// [`Error::Forbidden`] (see [`Viewer::scope`]), a database failure.
pub async fn fleet(store: &Store, viewer: Viewer, filter: Filter, now: i64) -> Result<Fleet> {
    let venue = viewer.scope()?;
    let recent = now - RECENT_REFUSALS_MS;
    let query = FleetQuery {
        venue,
        synced_before: filter
            .stale_days
            .map(|d| now - i64::from(d.min(MAX_STALE_DAYS)) * DAY_MS),
        refused_since: filter.has_refusals.then_some(recent),
        limit: i64::try_from(MAX_READ + 1).unwrap_or(i64::MAX),
    };
    let mut rows = store.fleet_devices(&query).await?;
    let truncated = rows.len() > MAX_READ;
    rows.truncate(MAX_READ);
    let minimums = store.min_app_versions().await?;
    let minimum_of: HashMap<Role, &str> = minimums.iter().map(|(r, v)| (*r, v.as_str())).collect();
    let mut devices: Vec<DeviceView> = rows
        .into_iter()
        .map(|device| DeviceView {
            below_minimum: minimum_of
                .get(&device.role)
                .is_some_and(|m| below_minimum(device.app_version.as_deref(), m)),
            device,
            refusals: Vec::new(),
        })
        .filter(|d| !filter.below_minimum || d.below_minimum)
        .collect();
    let matching = devices.len();
    devices.truncate(MAX_SHOWN);
    let mut tallies: HashMap<Uuid, Vec<RefusalTally>> = HashMap::new();
    for t in store.fleet_refusals(venue, recent).await? {
        tallies.entry(t.device_id).or_default().push(t);
    }
    for d in &mut devices {
        if let Some(mut t) = tallies.remove(&d.device.id) {
            t.sort_by(|a, b| {
                b.count
                    .cmp(&a.count)
                    .then_with(|| a.code.as_str().cmp(b.code.as_str()))
            });
            d.refusals = t;
        }
    }
    Ok(Fleet {
        devices,
        matching,
        truncated,
        minimums,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_their_numbers_then_pre_release() {
        let v = |s| AppVersion::parse(s).unwrap_or_else(|| panic!("{s}"));
        assert!(v("1.4.2") < v("1.10.0"));
        assert_eq!(v("1.4"), v("1.4.0"));
        assert_eq!(v("v2.0.0+build.7"), v("2.0.0"));
        assert!(v("1.5.0-beta.1") < v("1.5.0"));
        assert!(v("1.5.0-beta.1") > v("1.4.9"));
        assert!(v("1.5.0-alpha") < v("1.5.0-beta"));
        for bad in [
            "",
            "abc",
            "1..2",
            "1.2.3.4.5",
            "-1.2",
            "1.2-",
            "1.2+",
            "1.2 beta",
            "1.2-bé",
            "1234567890.1",
            "1.\n2",
            "1.2-<b>",
        ] {
            assert_eq!(AppVersion::parse(bad), None, "{bad:?}");
        }
        assert_eq!(AppVersion::parse(&"1".repeat(65)), None);
    }

    #[test]
    fn a_device_without_a_readable_version_is_below_any_minimum() {
        assert!(below_minimum(Some("1.3.9"), "1.4"));
        assert!(!below_minimum(Some("1.4.0"), "1.4"));
        assert!(!below_minimum(Some("2.0"), "1.4"));
        assert!(below_minimum(None, "1.4"));
        assert!(below_minimum(Some("garbage"), "1.4"));
        assert!(!below_minimum(None, "not a version"));
    }

    #[test]
    fn only_admins_and_a_venues_staff_see_the_fleet() {
        let venue = Uuid::from_u128(7);
        let admin = Viewer {
            role: Role::BureauAdmin,
            venue_id: None,
        };
        let staff = Viewer {
            role: Role::VenueStaff,
            venue_id: Some(venue),
        };
        assert_eq!(admin.scope().ok(), Some(None));
        assert_eq!(staff.scope().ok(), Some(Some(venue)));
        for role in [Role::Teacher, Role::Pupil, Role::Volunteer, Role::Server] {
            assert!(
                Viewer {
                    role,
                    venue_id: Some(venue)
                }
                .scope()
                .is_err()
            );
        }
        assert!(
            Viewer {
                role: Role::VenueStaff,
                venue_id: None
            }
            .scope()
            .is_err()
        );
        let gate = FleetDevice {
            id: Uuid::from_u128(1),
            role: Role::VenueStaff,
            school: None,
            venue_id: Some(venue),
            venue: Some("馆".into()),
            app_version: None,
            created_at: 0,
            revoked_at: None,
            last_sync_at: None,
            pending_refusals: 0,
            pending_changes: None,
        };
        let other_gate = FleetDevice {
            venue_id: Some(Uuid::from_u128(8)),
            ..gate.clone()
        };
        let teacher_here = FleetDevice {
            role: Role::Teacher,
            ..gate.clone()
        };
        assert!(staff.may_manage(&gate));
        assert!(!staff.may_manage(&other_gate));
        assert!(!staff.may_manage(&teacher_here));
        assert!(admin.may_manage(&other_gate) && admin.may_manage(&teacher_here));
    }
}
