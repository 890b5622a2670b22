//! Pure rules over merged documents. Every replica computes the same answer from the same
//! merged document, so the phone, the gate, the server's records and the dashboard agree.

pub mod attendance;
pub mod capacity;
pub mod volunteer;
