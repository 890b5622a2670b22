//! The server stops in the middle of the day.

use kepu_mobile_ffi::api::ApiError;

use crate::harness::{World, until};

stories! {
    /// The server is killed mid-day and started again on the same data: nothing acknowledged is lost and every phone resyncs.
    async fn a_server_killed_mid_day_loses_nothing_acknowledged(backend: Backend) {
        let mut w = World::start(backend).await;
        let v = w.confirmed_visit(6).await;
        for pass in &v.passes[..3] {
            v.teacher.scan(&v.booking, pass);
        }
        v.teacher.sync().await;
        assert_eq!(v.teacher.pending(), 0, "acknowledged");
        v.gate.scan(&v.booking, &v.passes[3]);
        v.gate.sync().await;
        assert_eq!(v.gate.pending(), 0, "acknowledged");
        // The gate stays connected in the background.
        v.gate.start_background_sync().unwrap();
        until("the gate connected", || async { v.gate.sync_status().unwrap().connected.then_some(()) }).await;

        w.server.kill();
        // The teacher keeps scanning while the server is down.
        v.teacher.scan(&v.booking, &v.passes[4]);
        v.teacher.scan(&v.booking, &v.passes[5]);
        assert!(matches!(v.teacher.try_sync().await, Err(ApiError::Offline { .. })));
        assert_eq!(v.teacher.pending(), 2);
        until("the gate to notice", || async { (!v.gate.sync_status().unwrap().connected).then_some(()) }).await;

        w.server.start().await;
        v.teacher.sync().await;
        assert_eq!(v.teacher.pending(), 0);
        until("the gate reconnected by itself", || async {
            let s = v.gate.sync_status().unwrap();
            (s.connected && v.gate.roster_of(&v.booking).arrived == 6).then_some(())
        })
        .await;
        v.gate.stop_background_sync();
        // A phone enrolled after the restart gets everything from the server.
        let fresh = w.phone(&w.teachers[1]).await;
        fresh.fetch(&v.booking).await;
        let roster = fresh.roster_of(&v.booking);
        assert_eq!((roster.arrived, roster.inside_now), (6, 6));
        assert_eq!(v.teacher.roster_of(&v.booking), roster);
        let staff = w.web_login(&w.staff, "museum.staff").await;
        let path = format!("/api/venues/{}/live?day={}", w.venue, v.day);
        until("the records after the restart", || {
            let (staff, path) = (&staff, &path);
            async move { (staff.json(path).await["totals"]["arrived"] == 6).then_some(()) }
        })
        .await;
    }
}
