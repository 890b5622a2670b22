//! A school day at the museum, from the gate to the bus home.

use crate::harness::{World, until};

stories! {
    /// A teacher's phone and the gate scan the same pupils offline; after syncing every device and the dashboard count each pupil once.
    async fn two_phones_scan_the_same_pupils_offline_and_each_is_counted_once(backend: Backend) {
        let w = World::start(backend).await;
        let v = w.confirmed_visit(5).await;
        let second = w.phone(&w.teachers[1]).await;
        second.fetch(&v.booking).await;
        // No signal in the museum's hall: overlapping scans on three devices.
        for (phone, which) in [(&v.teacher, &[0, 1, 2][..]), (&second, &[1, 2, 3]), (&v.gate, &[3, 4])] {
            for &i in which {
                phone.scan(&v.booking, &v.passes[i]);
            }
            assert!(phone.pending() > 0);
        }
        // Each device saw only its own scans.
        assert_eq!(v.teacher.roster_of(&v.booking).arrived, 3);
        for _ in 0..2 {
            for phone in [&v.teacher, &second, &v.gate] {
                phone.sync().await;
            }
        }
        let roster = v.teacher.roster_of(&v.booking);
        assert_eq!((roster.expected, roster.arrived, roster.inside_now), (5, 5, 5));
        assert!(roster.missing.is_empty());
        assert_eq!(roster.pupils.iter().map(|p| p.scans).sum::<u32>(), 8, "second scans kept");
        for phone in [&second, &v.gate] {
            assert_eq!(phone.roster_of(&v.booking), roster);
            assert_eq!(phone.pending(), 0);
        }
        // The museum's records count each pupil once and show the duplicates.
        let staff = w.web_login(&w.staff, "museum.staff").await;
        let path = format!("/api/venues/{}/live?day={}", w.venue, v.day);
        let live = until("the records of every scan", || {
            let (staff, path) = (&staff, &path);
            async move {
                let live = staff.json(path).await;
                (live["duplicates"].as_array().map(Vec::len) == Some(3)).then_some(live)
            }
        })
        .await;
        assert_eq!(live["totals"]["arrived"], 5, "{live:#}");
        assert_eq!(live["totals"]["expected"], 5);
    }

    /// A pupil checks in with the gate's rotating code, the teacher scans the rest, and the live dashboard's stream shows each arrival.
    async fn the_live_dashboard_streams_the_arrivals(backend: Backend) {
        let w = World::start(backend).await;
        let v = w.confirmed_visit(4).await;
        let staff = w.web_login(&w.staff, "museum.staff").await;
        let mut stream = staff
            .events(&format!("/api/venues/{}/live/events?day={}", w.venue, v.day))
            .await;
        let first = stream.until("the visit expected", |s| s["totals"]["expected"] == 4).await;
        assert_eq!(first["totals"]["arrived"], 0);
        // The gate certifies its day key once, online; its codes then work offline.
        let now = crate::harness::now_ms();
        let cert_expiry = v.gate.certify_gate_day().await.unwrap();
        assert!(cert_expiry > now);
        // Through the coming UTC day too (it starts at 08:00 Beijing time): a gate made
        // ready before opening, or the evening before, shows codes offline all day.
        let end_of_tomorrow = (now / 86_400_000 + 2) * 86_400_000;
        assert!(cert_expiry >= end_of_tomorrow, "{cert_expiry} < {end_of_tomorrow}");
        let pupil = w.phone(&v.pupils[0]).await;
        pupil.fetch(&v.booking).await;
        let receipt = pupil
            .check_in_with_gate_code(v.booking.clone(), v.gate.gate_code().unwrap())
            .unwrap();
        assert_eq!(receipt.pupil_id, v.pupils[0]);
        pupil.sync().await;
        stream.until("the first arrival", |s| s["totals"]["arrived"] == 1).await;
        for pass in &v.passes[1..] {
            v.teacher.scan(&v.booking, pass);
        }
        v.teacher.sync().await;
        let all = stream.until("every arrival", |s| s["totals"]["arrived"] == 4).await;
        assert_eq!(all["totals"]["inside"], 4, "{all:#}");
        assert_eq!(all["totals"]["missing"], 0);
        let visits = pupil.my_visits().unwrap();
        assert_eq!(visits.len(), 1);
        assert!(visits[0].checked_in_at_ms.is_some());
    }
}

stories! {
    /// At the end of the day the teacher and one pupil check everyone out; the rosters and the dashboard show nobody inside.
    async fn the_bus_home_checks_everyone_out(backend: Backend) {
        let w = World::start(backend).await;
        let v = w.confirmed_visit(3).await;
        let pupil = w.phone(&v.pupils[0]).await;
        pupil.fetch(&v.booking).await;
        for pass in &v.passes {
            v.teacher.scan(&v.booking, pass);
        }
        v.teacher.sync().await;
        let staff = w.web_login(&w.staff, "museum.staff").await;
        let mut stream = staff
            .events(&format!("/api/venues/{}/live/events?day={}", w.venue, v.day))
            .await;
        stream.until("everyone inside", |s| s["totals"]["inside"] == 3).await;
        // The pupil leaves with a parent and checks herself out; the teacher takes the rest.
        pupil.sync().await;
        pupil.check_out(v.booking.clone(), None).unwrap();
        pupil.sync().await;
        stream.until("one pupil gone", |s| s["totals"]["inside"] == 2).await;
        for p in &v.pupils[1..] {
            v.teacher.check_out_pupil(&v.booking, p);
        }
        v.teacher.sync().await;
        let last = stream.until("nobody inside", |s| s["totals"]["inside"] == 0).await;
        assert_eq!(last["totals"]["arrived"], 3, "arrivals stay counted: {last:#}");
        v.teacher.sync().await;
        let roster = v.teacher.roster_of(&v.booking);
        assert_eq!((roster.arrived, roster.inside_now, roster.left), (3, 0, 3));
        pupil.sync().await;
        let visit = &pupil.my_visits().unwrap()[0];
        assert!(visit.checked_out_at_ms >= visit.checked_in_at_ms);
        assert!(visit.checked_out_at_ms.is_some());
    }

    /// A volunteer logs two activities; the museum's staff confirm one with fewer minutes and decline the other; phone and report add up the same minutes.
    async fn a_volunteers_confirmed_minutes_add_up(backend: Backend) {
        let w = World::start(backend).await;
        let gate = w.gate().await;
        let volunteer = w.phone(&w.volunteer).await;
        let start = crate::harness::now_ms() - 3 * 3_600_000;
        let tour = volunteer
            .log_activity(w.venue.clone(), "guided_tour".into(), start, 90, "讲解恐龙展厅".into())
            .unwrap();
        let demo = volunteer
            .log_activity(w.venue.clone(), "demonstration".into(), start + 5_400_000, 60, "静电实验".into())
            .unwrap();
        volunteer.sync().await;
        let log = volunteer.activity_log_doc().unwrap();
        // The volunteer shows the log's QR to the museum's staff.
        gate.fetch(&log).await;
        assert_eq!(gate.volunteer_minutes(Some(log.clone())).unwrap().unconfirmed, 150);
        gate.confirm_activity(log.clone(), tour, true, Some(75)).unwrap();
        gate.confirm_activity(log.clone(), demo, false, None).unwrap();
        gate.sync().await;
        volunteer.sync().await;
        let minutes = volunteer.volunteer_minutes(None).unwrap();
        assert_eq!(
            (minutes.confirmed, minutes.unconfirmed, minutes.declined, minutes.activities),
            (75, 0, 60, 2)
        );
        // The school's report counts the confirmed minutes only.
        let teacher = w.web_login(&w.teachers[0], "teacher.wang").await;
        let school = w.school.clone();
        until("the confirmed minutes in the report", || {
            let (teacher, school) = (&teacher, &school);
            async move {
                let report = teacher.json("/api/reports/schools").await;
                let row = report["rows"].as_array()?.iter().find(|r| r["school_id"] == **school)?.clone();
                (row["volunteer_minutes"] == 75).then_some(row)
            }
        })
        .await;
    }

    /// The school's report counts the visit once a pupil has arrived, and only for the school that came.
    async fn the_schools_report_counts_the_visit(backend: Backend) {
        let w = World::start(backend).await;
        let v = w.confirmed_visit(3).await;
        let ours = w.web_login(&w.teachers[0], "teacher.wang").await;
        let theirs = w.web_login(&w.other_teacher, "teacher.li").await;
        let visits = |report: &serde_json::Value, school: &str| {
            let rows = report["rows"].as_array().expect("rows");
            assert_eq!(rows.len(), 1, "a teacher sees their own school's row: {report:#}");
            assert_eq!(rows[0]["school_id"], school);
            rows[0]["venue_visits"].as_i64().expect("visits")
        };
        // Booked and confirmed, but nobody has arrived yet: no visit.
        assert_eq!(visits(&ours.json("/api/reports/schools").await, &w.school), 0);
        v.teacher.scan(&v.booking, &v.passes[0]);
        v.teacher.scan(&v.booking, &v.passes[1]);
        v.teacher.sync().await;
        let school = w.school.clone();
        until("the visit in the report", || {
            let (ours, school) = (&ours, &school);
            async move {
                let report = ours.json("/api/reports/schools").await;
                (visits(&report, school) == 1).then_some(())
            }
        })
        .await;
        let report = ours.json("/api/reports/schools").await;
        assert_eq!(report["rows"][0]["met"]["venue_visit"], true, "{report:#}");
        assert_eq!(visits(&theirs.json("/api/reports/schools").await, &w.other_school), 0);
    }
}
