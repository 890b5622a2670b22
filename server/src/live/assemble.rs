//! Builds a [`Snapshot`] from the rows of one venue-day (pure): slots and bookings with
//! their numbers, arrivals over time, missing pupils per group, the duplicate and anomaly
//! ledger and the uncertainty band.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::access::{pseudonym, short_device};
use super::day::{Day, VENUE_UTC_OFFSET_MS};
use super::view::{
    AnomalyView, Arrivals, Band, BookingView, Bucket, DeviceLabel, Duplicate, PupilLabel, ScanView,
    SlotView, Snapshot, StaleDevice, Totals,
};
use crate::store::{DayAnomaly, DayBooking, DayDevice, DayScan, DaySlot};

/// A device that is not connected and last synced longer ago than this may hold scans
/// the server has not seen: it widens the uncertainty band.
pub const STALE_AFTER_MS: i64 = 10 * 60_000;
/// Width of one bar of the arrivals chart.
pub const BUCKET_MS: i64 = 10 * 60_000;

/// What [`assemble`] needs, read from the store.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Venue name.
    pub venue_name: String,
    /// The day's slots.
    pub slots: Vec<DaySlot>,
    /// The day's bookings.
    pub bookings: Vec<DayBooking>,
    /// Their rosters, by document id.
    pub rosters: HashMap<String, Arc<Vec<Uuid>>>,
    /// Their check-in scans.
    pub scans: Vec<DayScan>,
    /// Their anomalies.
    pub anomalies: Vec<DayAnomaly>,
    /// Devices that scanned, and every relevant device.
    pub devices: Vec<DayDevice>,
    /// Pupil id to (display name, school id), only when names may be shown.
    /// (Shared: a stream keeps them from one read to the next, ADR 0199.)
    pub names: Arc<HashMap<String, (String, String)>>,
}

fn device_label(devices: &HashMap<&str, &DayDevice>, id: &str) -> DeviceLabel {
    DeviceLabel {
        role: devices
            .get(id)
            .map_or_else(|| "unknown".to_owned(), |d| d.role.clone()),
        short_id: short_device(id),
    }
}

fn pupil_label(names: &HashMap<String, (String, String)>, pupil: &str, school: &str) -> PupilLabel {
    // A name is shown only for a pupil of the booking's own school.
    match names.get(pupil) {
        Some((name, s)) if s == school => PupilLabel {
            label: name.clone(),
            named: true,
        },
        _ => PupilLabel {
            label: pseudonym(pupil),
            named: false,
        },
    }
}

/// Builds the snapshot of `day` from its rows, as of `now`. Pure.
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn assemble(venue: Uuid, day: Day, rows: &Rows, names_shown: bool, now: i64) -> Snapshot {
    let devices: HashMap<&str, &DayDevice> =
        rows.devices.iter().map(|d| (&*d.device_id, d)).collect();
    let bookings: HashMap<&str, &DayBooking> = rows
        .bookings
        .iter()
        .map(|b| (b.doc_id.as_str(), b))
        .collect();
    let empty = HashMap::new();
    let names = if names_shown { &rows.names } else { &empty };

    // Pupils counted per booking.
    let mut counted: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for s in rows.scans.iter().filter(|s| s.counted) {
        counted.entry(&*s.doc_id).or_default().insert(&*s.pupil_id);
    }

    let mut totals = Totals::default();
    let mut slots: Vec<SlotView> = rows
        .slots
        .iter()
        .map(|s| SlotView {
            slot_id: s.slot_id.clone(),
            label: s.label.clone(),
            start: s.start,
            end: s.end,
            capacity: s.capacity,
            totals: Totals::default(),
            bookings: Vec::new(),
        })
        .collect();
    let slot_index: HashMap<String, usize> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (s.slot_id.clone(), i))
        .collect();
    for b in &rows.bookings {
        let Some(&i) = slot_index.get(&b.slot_id) else {
            continue;
        };
        let arrived_pupils = counted.get(b.doc_id.as_str());
        let mut missing: Vec<PupilLabel> = rows
            .rosters
            .get(&b.doc_id)
            .map(|r| {
                r.iter()
                    .map(Uuid::to_string)
                    .filter(|p| !arrived_pupils.is_some_and(|a| a.contains(p.as_str())))
                    .map(|p| pupil_label(names, &p, &b.school_id))
                    .collect()
            })
            .unwrap_or_default();
        missing.sort();
        let missing_count = i64::try_from(missing.len()).unwrap_or(i64::MAX);
        let slot = &mut slots[i];
        for t in [&mut slot.totals, &mut totals] {
            t.bookings += 1;
            t.party_size += b.party_size;
            t.expected += b.expected;
            t.arrived += b.arrived;
            t.inside += b.inside;
            t.missing += missing_count;
        }
        slot.bookings.push(BookingView {
            doc_id: b.doc_id.clone(),
            school_id: b.school_id.clone(),
            school_name: b.school_name.clone(),
            party_size: b.party_size,
            status: b.status.clone(),
            wait_position: b.wait_position,
            expected: b.expected,
            arrived: b.arrived,
            inside: b.inside,
            missing,
        });
    }

    let (day_start, day_end) = day.bounds();
    let arrivals = arrivals(
        rows.scans
            .iter()
            .filter(|s| s.counted && s.at >= day_start && s.at < day_end)
            .map(|s| s.at),
        rows.slots.iter().map(|s| s.start).min(),
        now.clamp(day_start, day_end - 1),
    );

    // Duplicates: every pupil of a booking with more than one check-in scan.
    let mut per_pupil: BTreeMap<(&str, &str), Vec<&DayScan>> = BTreeMap::new();
    for s in &rows.scans {
        per_pupil
            .entry((&*s.doc_id, &*s.pupil_id))
            .or_default()
            .push(s);
    }
    let mut duplicates: Vec<Duplicate> = per_pupil
        .into_iter()
        .filter(|(_, scans)| scans.len() > 1)
        .map(|((doc, pupil), mut scans)| {
            scans.sort_by(|a, b| (a.at, &a.device_id).cmp(&(b.at, &b.device_id)));
            let school = bookings.get(doc).map_or("", |b| b.school_id.as_str());
            Duplicate {
                doc_id: doc.to_owned(),
                school_name: bookings
                    .get(doc)
                    .map(|b| b.school_name.clone())
                    .unwrap_or_default(),
                pupil: pupil_label(names, pupil, school),
                scans: scans
                    .iter()
                    .map(|s| ScanView {
                        device: device_label(&devices, &s.device_id),
                        at: s.at,
                        method: s.method.to_string(),
                        counted: s.counted,
                    })
                    .collect(),
            }
        })
        .collect();
    duplicates.sort_by_key(|d| std::cmp::Reverse(d.scans.last().map_or(0, |s| s.at)));

    let mut anomalies: Vec<AnomalyView> = rows
        .anomalies
        .iter()
        .map(|a| {
            let booking = bookings.get(&*a.doc_id);
            // A walk-in is not on the booking's roster: shown by pseudonym.
            let school = if &*a.kind == "walk_in" {
                ""
            } else {
                booking.map_or("", |b| b.school_id.as_str())
            };
            AnomalyView {
                kind: a.kind.to_string(),
                doc_id: a.doc_id.to_string(),
                school_name: booking.map(|b| b.school_name.clone()).unwrap_or_default(),
                pupil: pupil_label(names, &a.pupil_id, school),
                device: device_label(&devices, &a.device_id),
                at: a.at,
            }
        })
        .collect();
    anomalies.sort_by(|a, b| (b.at, &a.kind).cmp(&(a.at, &b.kind)));

    let band = band(&rows.devices, &rows.anomalies, &totals, now);
    Snapshot {
        venue_id: venue.to_string(),
        venue_name: rows.venue_name.clone(),
        day: day.to_string(),
        utc_offset_minutes: VENUE_UTC_OFFSET_MS / 60_000,
        generated_at: now,
        names_shown,
        totals,
        slots,
        arrivals,
        duplicates,
        anomalies,
        band,
    }
}

/// Bars from the earlier of the first arrival and the first slot's start, to the later
/// of the last arrival and `now`.
fn arrivals(times: impl Iterator<Item = i64>, first_slot: Option<i64>, now: i64) -> Arrivals {
    let mut bars: BTreeMap<i64, i64> = BTreeMap::new();
    for at in times {
        *bars
            .entry(at.div_euclid(BUCKET_MS) * BUCKET_MS)
            .or_default() += 1;
    }
    let mut buckets = Vec::new();
    if let (Some(&first), Some(&last)) = (bars.keys().next(), bars.keys().next_back()) {
        let end = last.max(now.div_euclid(BUCKET_MS) * BUCKET_MS);
        let first = first_slot.map_or(first, |s| first.min(s.div_euclid(BUCKET_MS) * BUCKET_MS));
        let mut cumulative = 0;
        let mut t = first;
        while t <= end {
            let count = bars.get(&t).copied().unwrap_or(0);
            cumulative += count;
            buckets.push(Bucket {
                start: t,
                count,
                cumulative,
            });
            t += BUCKET_MS;
        }
    }
    Arrivals {
        bucket_minutes: BUCKET_MS / 60_000,
        buckets,
    }
}

fn band(devices: &[DayDevice], anomalies: &[DayAnomaly], totals: &Totals, now: i64) -> Band {
    let relevant: Vec<&DayDevice> = devices
        .iter()
        .filter(|d| d.relevant && !d.revoked && d.last_sync_at.is_some())
        .collect();
    let connected = relevant.iter().filter(|d| d.connected).count();
    let mut stale: Vec<StaleDevice> = relevant
        .iter()
        .filter_map(|d| {
            let last = d.last_sync_at?;
            (!d.connected && now - last > STALE_AFTER_MS).then(|| StaleDevice {
                device: DeviceLabel {
                    role: d.role.clone(),
                    short_id: short_device(&d.device_id),
                },
                last_sync_at: last,
                minutes: (now - last) / 60_000,
            })
        })
        .collect();
    stale.sort_by(|a, b| {
        (a.last_sync_at, &a.device.short_id).cmp(&(b.last_sync_at, &b.device.short_id))
    });
    let walk_ins = anomalies.iter().filter(|a| &*a.kind == "walk_in").count();
    Band {
        threshold_minutes: STALE_AFTER_MS / 60_000,
        relevant_devices: i64::try_from(relevant.len()).unwrap_or(i64::MAX),
        connected_devices: i64::try_from(connected).unwrap_or(i64::MAX),
        counts_are_lower_bounds: !stale.is_empty(),
        min_minutes: stale.iter().map(|s| s.minutes).min(),
        max_minutes: stale.iter().map(|s| s.minutes).max(),
        stale,
        arrived_at_most: totals.expected + i64::try_from(walk_ins).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(doc: &str, pupil: &str, device: &str, at: i64, counted: bool) -> DayScan {
        DayScan {
            doc_id: doc.into(),
            pupil_id: pupil.into(),
            device_id: device.into(),
            at,
            method: "manual".into(),
            counted,
        }
    }

    #[test]
    fn the_snapshot_counts_lists_the_missing_and_bands_stale_devices() {
        let venue = Uuid::from_u128(1);
        let day = Day::parse("2026-11-28").expect("a date");
        let (start, _) = day.bounds();
        let nine = start + 9 * 3_600_000;
        let now = nine + 3_600_000;
        let p = |i: u128| Uuid::from_u128(0x100 + i);
        let mut rows = Rows {
            venue_name: "湖南省科技馆".into(),
            slots: vec![DaySlot {
                slot_id: "s1".into(),
                start: nine,
                end: nine + 7_200_000,
                capacity: 60,
                label: "上午".into(),
            }],
            bookings: vec![DayBooking {
                doc_id: "b1".into(),
                slot_id: "s1".into(),
                school_id: "school".into(),
                school_name: "博才小学".into(),
                party_size: 4,
                status: "confirmed".into(),
                wait_position: None,
                expected: 3,
                arrived: 2,
                inside: 2,
                updated_at: 1,
                roster_key: Some(1),
            }],
            scans: vec![
                scan("b1", &p(0).to_string(), "dev-a", nine + 60_000, true),
                scan("b1", &p(0).to_string(), "dev-b", nine + 700_000, false),
                scan("b1", &p(1).to_string(), "dev-a", nine + 720_000, true),
            ],
            devices: vec![
                DayDevice {
                    device_id: "dev-a".into(),
                    role: "venue_staff".into(),
                    last_sync_at: Some(now - 3_600_000),
                    revoked: false,
                    relevant: true,
                    connected: true,
                },
                DayDevice {
                    device_id: "dev-b".into(),
                    role: "teacher".into(),
                    last_sync_at: Some(now - 14 * 60_000),
                    revoked: false,
                    relevant: true,
                    connected: false,
                },
                DayDevice {
                    device_id: "dev-c".into(),
                    role: "teacher".into(),
                    last_sync_at: Some(now - 60_000),
                    revoked: false,
                    relevant: true,
                    connected: false,
                },
            ],
            ..Rows::default()
        };
        rows.rosters
            .insert("b1".into(), Arc::new(vec![p(0), p(1), p(2)]));
        Arc::make_mut(&mut rows.names)
            .insert(p(2).to_string(), ("小明".to_owned(), "school".to_owned()));
        let s = assemble(venue, day, &rows, true, now);
        assert_eq!(s.totals.expected, 3);
        assert_eq!(s.totals.arrived, 2);
        assert_eq!(s.totals.missing, 1);
        assert_eq!(s.slots[0].bookings[0].missing[0].label, "小明");
        assert_eq!(s.duplicates.len(), 1);
        assert_eq!(s.duplicates[0].scans.len(), 2);
        assert!(s.duplicates[0].scans[0].counted);
        assert_eq!(s.duplicates[0].scans[1].device.role, "teacher");
        let total: i64 = s.arrivals.buckets.iter().map(|b| b.count).sum();
        assert_eq!(total, 2);
        assert_eq!(s.arrivals.buckets.last().map(|b| b.cumulative), Some(2));
        assert_eq!(s.band.stale.len(), 1);
        assert_eq!(s.band.stale[0].minutes, 14);
        assert!(s.band.counts_are_lower_bounds);
        assert_eq!(s.band.connected_devices, 1);

        let hidden = assemble(venue, day, &rows, false, now);
        assert_eq!(
            hidden.slots[0].bookings[0].missing[0].label,
            pseudonym(&p(2).to_string())
        );
        assert!(!format!("{hidden:?}").contains("小明"));
    }
}
