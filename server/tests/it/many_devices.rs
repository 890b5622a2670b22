//! Thirty devices (teachers and gate staff of three venues and schools) record check-ins
//! offline, then all reconnect at once: everything converges, each pupil is counted once,
//! and `/metrics` reports the connections, messages and refusals.

use std::collections::BTreeSet;
use std::time::Duration;

use kepu_server::accounts::Role;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::engine::{Event, Input};
use kepu_sync_core::ids::{PupilId, SchoolId, SlotId, VenueId};
use kepu_sync_core::schema::booking::{Booking, Status};
use uuid::Uuid;

use crate::support::{TestServer, metric, place};
use crate::sync_client::Device;
use crate::world::{Enroller, check_in, create_booking, new_doc, pupils, scan_ids};

crate::support::on_both_databases!(
    multi_thread server:
    thirty_offline_devices_reconnecting_at_once_converge_and_metrics_show_it,
);

const VENUES: usize = 3;
const PER_VENUE: usize = 10;
const CHECK_INS: usize = 20;
const ROSTER: usize = 40;

struct Group {
    booking: DocumentId,
    roster: Vec<PupilId>,
    devices: Vec<Device>,
}

async fn thirty_offline_devices_reconnecting_at_once_converge_and_metrics_show_it(
    server: &TestServer,
) {
    let store = &server.db.store;
    let p = place(store).await;
    let enroller = Enroller::new(store, server.addr);
    let mut groups = Vec::new();
    for v in 0..VENUES {
        let (school, venue) = if v == 0 {
            (p.school, p.venue)
        } else {
            (
                store
                    .create_school(kepu_server::ids::new_id(), p.county, &format!("学校{v}"))
                    .await
                    .unwrap()
                    .id,
                store
                    .create_venue(
                        kepu_server::ids::new_id(),
                        p.county,
                        &format!("科技馆{v}"),
                        "science_museum",
                    )
                    .await
                    .unwrap()
                    .id,
            )
        };
        let roster = pupils(100_000 * (v as u128 + 1), ROSTER);
        let booking = new_doc();
        let mut devices = Vec::new();
        for i in 0..PER_VENUE {
            let seed = u8::try_from(v * PER_VENUE + i + 1).unwrap();
            let d = if i % 2 == 0 {
                enroller
                    .device(Role::Teacher, Some(school), None, seed)
                    .await
            } else {
                enroller
                    .device(Role::VenueStaff, None, Some(venue), seed)
                    .await
            };
            devices.push(d);
        }
        devices[0].edit(
            booking,
            create_booking(
                VenueId(venue),
                SlotId(Uuid::from_u128(v as u128 + 1)),
                SchoolId(school),
                roster.clone(),
            ),
        );
        for d in &mut devices {
            d.want(booking);
            d.connect(server.addr).await;
            d.pump(Duration::from_millis(100)).await;
        }
        // The harness drives a device's socket only while it is pumped: the booking's
        // maker must have handed it to the server before anyone can fetch it.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !devices[0].server_has_all(&booking) && std::time::Instant::now() < deadline {
            devices[0].pump(Duration::from_millis(50)).await;
        }
        assert!(
            devices[0].server_has_all(&booking),
            "the server acknowledges the new booking"
        );
        for d in &mut devices {
            // A device that asked before the first one's booking was stored is told the
            // server has none; it asks again, as the phone library does on its next sync.
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while d.doc(&booking).and_then(Booking::read).is_none()
                && std::time::Instant::now() < deadline
            {
                d.want(booking);
                d.pump(Duration::from_millis(100)).await;
            }
            assert!(
                d.doc(&booking).and_then(Booking::read).is_some(),
                "every device of the venue holds its booking; the device's last events: {:?}",
                d.events.iter().rev().take(12).collect::<Vec<_>>()
            );
            d.disconnect();
        }
        groups.push(Group {
            booking,
            roster,
            devices,
        });
    }

    // Offline: 20 check-ins on each of the 30 devices, overlapping pupils.
    let mut expected: Vec<BTreeSet<String>> = Vec::new();
    for g in &mut groups {
        let mut ids = BTreeSet::new();
        for (i, d) in g.devices.iter_mut().enumerate() {
            for k in 0..CHECK_INS {
                let (edit, id) = check_in(g.roster[(i * 3 + k) % ROSTER]);
                d.edit(g.booking, edit);
                ids.insert(id);
            }
        }
        expected.push(ids);
    }
    let before = server.metrics().await;

    // All thirty reconnect at once.
    let mut tasks = Vec::new();
    for (gi, g) in groups.iter_mut().enumerate() {
        for d in std::mem::take(&mut g.devices) {
            let (booking, want) = (g.booking, expected[gi].clone());
            let addr = server.addr;
            tasks.push(tokio::spawn(async move {
                let mut d = d;
                d.connect(addr).await;
                for _ in 0..100 {
                    d.pump(Duration::from_millis(60)).await;
                    let done = d.server_has_all(&booking)
                        && d.doc(&booking).is_some_and(|b| scan_ids(b) == want);
                    if done {
                        break;
                    }
                }
                (gi, d)
            }));
        }
    }
    for t in tasks {
        let (gi, d) = t.await.expect("device task");
        groups[gi].devices.push(d);
    }
    let during = server.metrics().await;
    assert_eq!(
        metric(&during, "kepu_ws_connections"),
        (VENUES * PER_VENUE) as f64,
        "every device is connected"
    );
    for (gi, g) in groups.iter().enumerate() {
        let first = Booking::read(g.devices[0].doc(&g.booking).unwrap()).unwrap();
        for d in &g.devices {
            assert!(d.server_has_all(&g.booking), "the server acknowledged all");
            let b = Booking::read(d.doc(&g.booking).unwrap()).unwrap();
            assert_eq!(b, first, "the devices of a venue converge");
        }
        let stored = kepu_server::records::load(store, g.booking).await.unwrap();
        assert_eq!(
            scan_ids(&stored),
            expected[gi],
            "the server stored every scan"
        );
    }
    let sent_in = metric(&during, "kepu_sync_messages_total{direction=\"in\"}")
        - metric(&before, "kepu_sync_messages_total{direction=\"in\"}");
    let sent_out = metric(&during, "kepu_sync_messages_total{direction=\"out\"}")
        - metric(&before, "kepu_sync_messages_total{direction=\"out\"}");
    let devices = (VENUES * PER_VENUE) as f64;
    assert!(
        sent_in >= 2.0 * devices,
        "a join and at least one sync message per device: {sent_in}"
    );
    assert!(
        sent_out >= 2.0 * devices,
        "a peer reply and at least one sync message per device: {sent_out}"
    );
    assert!(
        !during.contains("kepu_refusals_total{"),
        "no refusal among valid check-ins"
    );

    // One forbidden change: a teacher writes the server-only status.
    let booking = groups[0].booking;
    let teacher = &mut groups[0].devices[0];
    let fx = teacher.engine.edit_unchecked(
        kepu_server::clock::now_ms(),
        booking,
        &Edit::Decide {
            status: Status::Confirmed,
            wait_position: Some(0),
        },
    );
    for (task, t) in fx.tasks {
        let result = teacher.store.run(&t);
        teacher.feed(Input::IoDone { task, result });
    }
    teacher.want(booking);
    for _ in 0..20 {
        teacher.pump(Duration::from_millis(50)).await;
        if teacher
            .events
            .iter()
            .any(|e| matches!(e, Event::Refused { .. }))
        {
            break;
        }
    }
    let after = server.metrics().await;
    assert_eq!(
        metric(
            &after,
            "kepu_refusals_total{code=\"status-is-server-only\"}"
        ),
        1.0,
        "the refusal is counted once, by its code"
    );

    // Records: each pupil counted once, every scan kept.
    let admin = enroller.admin_token().await;
    for (gi, g) in groups.iter().enumerate() {
        let scanned: BTreeSet<PupilId> = Booking::read(g.devices[1].doc(&g.booking).unwrap())
            .unwrap()
            .check_ins
            .iter()
            .map(|s| s.pupil)
            .collect();
        let path = format!("/api/bookings/{}/attendance", g.booking);
        let mut v = serde_json::Value::Null;
        for _ in 0..100 {
            v = enroller.get_json(&path, &admin).await;
            if v["scans"].as_array().map(Vec::len) == Some(expected[gi].len()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            v["scans"].as_array().map(Vec::len),
            Some(expected[gi].len()),
            "every scan is in the records"
        );
        assert_eq!(
            v["booking"]["arrived"].as_u64(),
            Some(scanned.len() as u64),
            "each pupil counted once"
        );
    }
    for g in &mut groups {
        for d in &mut g.devices {
            d.disconnect();
        }
    }
}
