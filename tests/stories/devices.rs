//! Phones: revoked, or offline all day.

use kepu_mobile_ffi::api::ApiError;

use crate::harness::{World, until};

stories! {
    /// The bureau revokes a lost phone: it is cut off while connected and wiped, a phone revoked with the admin CLI too, and another phone keeps its data.
    async fn a_revoked_phone_is_cut_off_and_wiped_while_another_keeps_its_data(backend: Backend) {
        let w = World::start(backend).await;
        let v = w.confirmed_visit(4).await;
        let lost = w.phone(&w.teachers[1]).await;
        lost.fetch(&v.booking).await;
        let second = w.phone(&w.teachers[1]).await;
        second.fetch(&v.booking).await;
        lost.scan(&v.booking, &v.passes[0]);
        lost.sync().await;
        v.teacher.scan(&v.booking, &v.passes[1]);
        v.teacher.sync().await;
        // The lost phone stays connected in the background.
        lost.start_background_sync().unwrap();
        until("the lost phone connected", || async {
            lost.sync_status().unwrap().connected.then_some(())
        })
        .await;
        let bureau = w.bureau_device().await;
        let (status, body) = bureau
            .post(&format!("/api/admin/devices/{}/revoke", lost.device_id()))
            .await;
        assert_eq!((status, &body["revoked"]), (200, &serde_json::json!(true)), "{body}");
        let status = until("the lost phone cut off", || async {
            let s = lost.sync_status().unwrap();
            s.revoked.then_some(s)
        })
        .await;
        assert!(!status.connected && !status.enrolled);
        assert!(lost.identity().is_none(), "identity forgotten");
        assert!(lost.roster(v.booking.clone()).is_err(), "no attendance left on the phone");
        lost.stop_background_sync();
        // The admin CLI, in another process, revokes a second phone while it is connected.
        second.start_background_sync().unwrap();
        until("the second phone connected", || async {
            second.sync_status().unwrap().connected.then_some(())
        })
        .await;
        w.server.admin(&["revoke-device", "--device", &second.device_id()]);
        until("the second phone cut off", || async {
            second.sync_status().unwrap().revoked.then_some(())
        })
        .await;
        assert!(second.identity().is_none());
        assert!(second.documents().is_err());
        second.stop_background_sync();
        match second.try_sync().await {
            Err(ApiError::NotEnrolled) => {}
            other => panic!("a wiped phone cannot sync, got {other:?}"),
        }
        // The teacher's own phone is untouched and keeps working.
        v.teacher.scan(&v.booking, &v.passes[2]);
        v.teacher.sync().await;
        let roster = v.teacher.roster_of(&v.booking);
        assert_eq!(roster.arrived, 3, "the lost phone's synced scan is kept");
        assert_eq!(v.teacher.pending(), 0);
    }

    /// A teacher's phone with no signal all day scans and checks out the whole class, survives an app restart, and syncs it all in the evening.
    async fn a_phone_offline_all_day_syncs_in_the_evening(backend: Backend) {
        let w = World::start(backend).await;
        let v = w.confirmed_visit(5).await;
        // Morning: the phone goes offline. The gate, online, scans two pupils.
        for pass in &v.passes {
            v.teacher.scan(&v.booking, pass);
        }
        v.gate.scan(&v.booking, &v.passes[0]);
        v.gate.scan(&v.booking, &v.passes[1]);
        v.gate.sync().await;
        // Afternoon: everyone is checked out on the offline phone; the app is restarted.
        for p in &v.pupils {
            v.teacher.check_out_pupil(&v.booking, p);
        }
        let pending = v.teacher.pending();
        assert!(pending >= 10, "every scan and check-out waits: {pending}");
        let teacher = v.teacher.reopen();
        assert_eq!(teacher.pending(), pending, "pending survives a restart");
        // The dashboard knows only the gate's scans so far.
        let staff = w.web_login(&w.staff, "museum.staff").await;
        let path = format!("/api/venues/{}/live?day={}", w.venue, v.day);
        let live = staff.json(&path).await;
        assert!(live["totals"]["arrived"].as_i64().unwrap() <= 2, "{live:#}");
        // Evening: back in signal.
        teacher.sync().await;
        assert_eq!(teacher.pending(), 0);
        v.gate.sync().await;
        let roster = v.gate.roster_of(&v.booking);
        assert_eq!((roster.arrived, roster.inside_now, roster.left), (5, 0, 5));
        assert_eq!(teacher.roster_of(&v.booking), roster);
        until("the evening's records on the dashboard", || {
            let (staff, path) = (&staff, &path);
            async move {
                let live = staff.json(path).await;
                (live["totals"]["arrived"] == 5 && live["totals"]["inside"] == 0).then_some(())
            }
        })
        .await;
    }
}
