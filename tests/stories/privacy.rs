//! A pupil's data on request of the school.

use kepu_mobile_ffi::api::ApiError;

use crate::harness::{World, until};

stories! {
    /// A pupil erased at the school's request loses their name on the dashboard, their phone and their pass, while the visit's counts stay.
    async fn an_erased_pupil_disappears_from_the_records(backend: Backend) {
        let w = World::start(backend).await;
        let v = w.confirmed_visit(4).await;
        let erased = v.pupils[3].clone();
        let pupil = w.phone(&erased).await;
        pupil.fetch(&v.booking).await;
        v.teacher.scan(&v.booking, &v.passes[0]);
        v.teacher.sync().await;
        let staff = w.web_login(&w.staff, "museum.staff").await;
        let path = format!("/api/venues/{}/live?day={}", w.venue, v.day);
        let before = until("the arrival on the dashboard", || {
            let (staff, path) = (&staff, &path);
            async move {
                let live = staff.json(path).await;
                (live["totals"]["arrived"] == 1).then_some(live)
            }
        })
        .await;
        assert!(before.to_string().contains("Pupil A3"), "staff see the missing pupil's name");

        let out = w.server.admin(&["erase-pupil", "--pupil", &erased]);
        assert!(out.contains("1 device(s) revoked"), "{out}");
        // The name is gone from the dashboard; the pupil is still counted as missing.
        let after = staff.json(&path).await;
        assert!(!after.to_string().contains("Pupil A3"), "{after:#}");
        assert_eq!(after["totals"]["missing"], 3);
        // The pupil's phone is refused and wiped.
        match pupil.try_sync().await {
            Err(ApiError::Revoked) => {}
            other => panic!("an erased pupil's phone must be refused, got {other:?}"),
        }
        assert!(pupil.identity().is_none());
        // No new pass is issued, and the old one stops scanning once phones have synced
        // the revocation list.
        let refused = v.teacher.fetch_pupil_pass(Some(erased.clone())).await;
        assert!(refused.is_err(), "no pass for an erased pupil");
        // A fresh phone each try: a scan accepted before the list arrived stays on it.
        until("the pass revoked on a freshly synced phone", || {
            let (w, booking, pass) = (&w, &v.booking, &v.passes[3]);
            async move {
                let probe = w.phone(&w.teachers[1]).await;
                probe.fetch(booking).await;
                match probe.scan_pupil_pass(booking.clone(), pass.clone()) {
                    Err(ApiError::InvalidInput { .. }) => Some(()),
                    Ok(_) => None,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        })
        .await;
        v.teacher.sync().await;
        assert!(matches!(
            v.teacher.scan_pupil_pass(v.booking.clone(), v.passes[3].clone()),
            Err(ApiError::InvalidInput { .. })
        ));
        v.teacher.scan(&v.booking, &v.passes[1]);
        v.teacher.sync().await;
        assert_eq!(v.teacher.roster_of(&v.booking).arrived, 2, "the visit goes on");
    }
}
