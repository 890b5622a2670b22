//! The capacity decision for one slot, made by the server in the order requests reached
//! it. Confirmed bookings stay confirmed; a cancellation frees places, which go to the
//! wait-listed requests in arrival order. A slot is never confirmed beyond its capacity.
//! [`edits`] turns the decision into the changes the server writes into the bookings;
//! the server's storage worker and the simulator's scenarios both call it.

use crate::edits::Edit;
use crate::schema::booking::Status;

/// One booking request for a slot, in the order the server received it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotRequest<K> {
    /// The caller's key for the booking (its document id).
    pub booking: K,
    /// Places asked for.
    pub party_size: u32,
    /// Its current status (as last decided, or requested).
    pub status: Status,
    /// Its current place on the wait list (as last decided), if any.
    #[serde(default)]
    pub wait_position: Option<u32>,
}

/// A decision for one request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decision<K> {
    /// The booking.
    pub booking: K,
    /// Confirmed, wait-listed or cancelled (cancelled requests keep their status).
    pub status: Status,
    /// 1-based place on the wait list.
    pub wait_position: Option<u32>,
}

/// Decides every request of a slot. `requests` must be in arrival order. The result has
/// one decision per request, in the same order.
#[must_use]
pub fn decide<K: Clone>(capacity: u32, requests: &[SlotRequest<K>]) -> Vec<Decision<K>> {
    let mut used: u64 = requests
        .iter()
        .filter(|r| r.status == Status::Confirmed)
        .map(|r| u64::from(r.party_size))
        .sum();
    let mut waiting = 0u32;
    requests
        .iter()
        .map(|r| {
            let (status, wait_position) = match r.status {
                Status::Confirmed => (Status::Confirmed, None),
                Status::Cancelled => (Status::Cancelled, None),
                Status::Requested | Status::Waitlisted => {
                    if r.party_size > 0 && used + u64::from(r.party_size) <= u64::from(capacity) {
                        used += u64::from(r.party_size);
                        (Status::Confirmed, None)
                    } else {
                        waiting += 1;
                        (Status::Waitlisted, Some(waiting))
                    }
                }
            };
            Decision {
                booking: r.booking.clone(),
                status,
                wait_position,
            }
        })
        .collect()
}

/// The server's decisions for a slot as edits to write: one [`Edit::Decide`] for every
/// booking whose status changes, and for every wait-listed booking whose place in the
/// queue moved (an earlier one was confirmed or cancelled). Bookings that stay as they are
/// get none, so deciding a settled slot again writes nothing. `requests` must be in
/// arrival order.
#[must_use]
pub fn edits<K: Clone>(capacity: u32, requests: &[SlotRequest<K>]) -> Vec<(K, Edit)> {
    decide(capacity, requests)
        .into_iter()
        .zip(requests)
        .filter(|(d, r)| {
            d.status != r.status
                || (d.status == Status::Waitlisted && d.wait_position != r.wait_position)
        })
        .map(|(d, _)| {
            (
                d.booking,
                Edit::Decide {
                    status: d.status,
                    wait_position: d.wait_position,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(b: u32, n: u32, s: Status) -> SlotRequest<u32> {
        SlotRequest {
            booking: b,
            party_size: n,
            status: s,
            wait_position: None,
        }
    }

    fn waiting(b: u32, n: u32, at: u32) -> SlotRequest<u32> {
        SlotRequest {
            wait_position: Some(at),
            ..req(b, n, Status::Waitlisted)
        }
    }

    fn decide_edit(status: Status, wait_position: Option<u32>) -> Edit {
        Edit::Decide {
            status,
            wait_position,
        }
    }

    #[test]
    fn a_new_request_is_decided_and_a_settled_slot_writes_nothing() {
        let reqs = [req(1, 30, Status::Confirmed), req(2, 10, Status::Requested)];
        assert_eq!(
            edits(40, &reqs),
            vec![(2, decide_edit(Status::Confirmed, None))]
        );
        let settled = [req(1, 30, Status::Confirmed), req(2, 10, Status::Confirmed)];
        assert!(edits(40, &settled).is_empty());
    }

    #[test]
    fn a_waitlisted_booking_that_moves_up_the_queue_gets_its_new_place() {
        // Ten places taken; the first in the queue cancels, the second becomes first.
        let reqs = [
            req(1, 10, Status::Confirmed),
            req(2, 5, Status::Cancelled),
            waiting(3, 5, 2),
        ];
        assert_eq!(
            edits(10, &reqs),
            vec![(3, decide_edit(Status::Waitlisted, Some(1)))]
        );
        let unmoved = [req(1, 10, Status::Confirmed), waiting(3, 5, 1)];
        assert!(edits(10, &unmoved).is_empty());
    }

    #[test]
    fn a_waitlisted_booking_that_gets_the_freed_places_is_confirmed() {
        let reqs = [
            req(1, 5, Status::Cancelled),
            waiting(2, 5, 1),
            waiting(3, 5, 2),
        ];
        assert_eq!(
            edits(10, &reqs),
            vec![
                (2, decide_edit(Status::Confirmed, None)),
                (3, decide_edit(Status::Confirmed, None)),
            ]
        );
    }

    #[test]
    fn last_places_go_to_the_first_request_received() {
        let d = decide(
            40,
            &[
                req(1, 30, Status::Confirmed),
                req(2, 10, Status::Requested),
                req(3, 10, Status::Requested),
            ],
        );
        assert_eq!(d[1].status, Status::Confirmed);
        assert_eq!(d[2].status, Status::Waitlisted);
        assert_eq!(d[2].wait_position, Some(1));
    }

    #[test]
    fn cancellation_promotes_without_demoting_anyone() {
        // A(5) confirmed, B(6) wait-listed, C(5) confirmed; A cancels.
        let d = decide(
            10,
            &[
                req(1, 5, Status::Cancelled),
                req(2, 6, Status::Waitlisted),
                req(3, 5, Status::Confirmed),
            ],
        );
        assert_eq!(
            d[2].status,
            Status::Confirmed,
            "a confirmed booking is never demoted"
        );
        // C keeps its 5 places; B's 6 do not fit beside them, so B keeps waiting.
        assert_eq!(
            (d[1].status, d[1].wait_position),
            (Status::Waitlisted, Some(1))
        );
        let d = decide(
            10,
            &[
                req(1, 5, Status::Cancelled),
                req(2, 5, Status::Waitlisted),
                req(3, 5, Status::Confirmed),
            ],
        );
        assert_eq!(
            d[1].status,
            Status::Confirmed,
            "freed places go to the wait list"
        );
    }

    #[test]
    fn empty_party_is_never_confirmed() {
        assert_eq!(
            decide(10, &[req(1, 0, Status::Requested)])[0].status,
            Status::Waitlisted
        );
    }

    proptest! {
        #[test]
        fn never_over_capacity(cap in 0u32..200, sizes in proptest::collection::vec((1u32..60, 0u8..4), 0..30)) {
            let reqs: Vec<_> = sizes.iter().enumerate().map(|(i, (n, s))| {
                let status = match s { 0 => Status::Requested, 1 => Status::Waitlisted, 2 => Status::Cancelled, _ => Status::Requested };
                req(u32::try_from(i).unwrap(), *n, status)
            }).collect();
            let d = decide(cap, &reqs);
            let used: u32 = d.iter().zip(&reqs).filter(|(d, _)| d.status == Status::Confirmed).map(|(_, r)| r.party_size).sum();
            prop_assert!(used <= cap);
            // Deciding again changes nothing.
            let again: Vec<_> = reqs.iter().zip(&d).map(|(r, d)| SlotRequest {
                wait_position: d.wait_position,
                ..req(r.booking, r.party_size, d.status)
            }).collect();
            prop_assert_eq!(decide(cap, &again), d);
            // Once the edits are written, there is nothing left to write.
            prop_assert!(edits(cap, &again).is_empty());
        }
    }
}
