//! What the museum's gate lets in, and what it does not.

use kepu_mobile_ffi::api::ApiError;

use crate::harness::{Phone, World, until};

stories! {
    /// A pupil's phone takes this museum's gate code, but not another museum's, a forged one or a stale one, and a pupil not on the roster never sees the booking.
    async fn the_gate_lets_in_only_its_own_pupils_with_its_own_code(backend: Backend) {
        let w = World::start(backend).await;
        let v = w.confirmed_visit(2).await;
        v.gate.certify_gate_day().await.unwrap();
        // Another museum in the county, with its own certified gate.
        let other_venue = w.server.admin(&["create-venue", "--county", &w.county, "--name", "岳麓书院"]);
        let other_staff = w.server.admin(&["create-user", "--role", "venue-staff", "--venue", other_venue.trim()]);
        let other_staff = other_staff.lines().find_map(|l| l.strip_prefix("user ")).unwrap().trim().to_owned();
        let other_gate = w.phone(&other_staff).await;
        let other_gate = until("the other museum's certificate", || {
            let other_gate: &Phone = &other_gate;
            async move { other_gate.certify_gate_day().await.is_ok().then_some(other_gate) }
        })
        .await;
        let pupil = w.phone(&v.pupils[0]).await;
        pupil.fetch(&v.booking).await;
        let good = v.gate.gate_code().unwrap();
        let mut forged = good.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        for (what, code) in [
            ("another museum's code", other_gate.gate_code().unwrap()),
            ("a forged code", forged),
            ("not a code", "KPG1.hello".to_owned()),
        ] {
            match pupil.check_in_with_gate_code(v.booking.clone(), code.clone()) {
                Err(ApiError::InvalidInput { reason }) => {
                    assert!(!reason.contains(&code), "{what}: the error repeats no code");
                }
                other => panic!("{what} must be refused, got {other:?}"),
            }
        }
        assert_eq!(pupil.roster_of(&v.booking).arrived, 0, "nothing was written");
        pupil.check_in_with_gate_code(v.booking.clone(), good).unwrap();
        pupil.sync().await;
        // A classmate who is not on this trip's roster cannot read the booking at all.
        let outsider = w.phone(&w.pupils[5]).await;
        outsider.add_document(v.booking.clone()).unwrap();
        let report = outsider.try_sync().await.unwrap();
        assert_eq!(report.unavailable, 1, "{report:?}");
        assert!(outsider.roster(v.booking.clone()).is_err());
        v.teacher.sync().await;
        let roster = v.teacher.roster_of(&v.booking);
        assert_eq!((roster.arrived, roster.anomalies.len()), (1, 0), "{roster:?}");
    }
}
