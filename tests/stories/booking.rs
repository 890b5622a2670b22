//! Booking a visit.

use kepu_mobile_ffi::api::BookingStatus;
use kepu_sync_core::calendar::{china_day, format_date};

use crate::harness::{World, now_ms, wait_for_status};

stories! {
    /// Two schools ask for the same small slot: the first to reach the server is confirmed, the other wait-listed.
    async fn first_come_first_served(backend: Backend) {
        let w = World::start(backend).await;
        let gate = w.gate().await;
        let slot = w.publish_slot(&gate, 8).await;
        let ours = w.phone(&w.teachers[0]).await;
        let theirs = w.phone(&w.other_teacher).await;
        // Both teachers fill in the request on the bus, offline.
        let first = ours
            .request_booking(w.venue.clone(), slot.clone(), 6, w.pupils[..6].to_vec())
            .unwrap();
        let second = theirs
            .request_booking(w.venue.clone(), slot.clone(), 5, w.other_pupils.clone())
            .unwrap();
        assert_eq!(ours.booking(first.clone()).unwrap().status, BookingStatus::Requested);
        // Ours reaches the server first.
        ours.sync().await;
        theirs.sync().await;
        wait_for_status(&ours, &first, BookingStatus::Confirmed).await;
        wait_for_status(&theirs, &second, BookingStatus::Waitlisted).await;
        let wait_listed = theirs.booking(second.clone()).unwrap();
        assert_eq!(wait_listed.wait_position, Some(1));
        // The museum's dashboard shows the same decision.
        let staff = w.web_login(&w.staff, "museum.staff").await;
        let day = format_date(china_day(now_ms()));
        let live = staff.json(&format!("/api/venues/{}/live?day={day}", w.venue)).await;
        let bookings = &live["slots"][0]["bookings"];
        let status_of = |doc: &str| {
            bookings.as_array().unwrap().iter()
                .find(|b| b["doc_id"] == doc)
                .map(|b| b["status"].as_str().unwrap().to_owned())
        };
        assert_eq!(status_of(&first).as_deref(), Some("confirmed"), "{live:#}");
        assert_eq!(status_of(&second).as_deref(), Some("waitlisted"), "{live:#}");
        assert_eq!(live["slots"][0]["capacity"], 8);
    }
}
