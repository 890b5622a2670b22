//! Offline check-in proofs, verifiable with Ed25519 on a device without signal and
//! re-verified by the server on sync.
//!
//! Two ways in:
//! 1. **Gate code** (`KPG1.`, 263 characters): a venue's gate device shows a code that
//!    changes every 30 seconds, signed with its day key; the day key carries the
//!    server's certificate ([`ServerSigner::certify_gate`]). The pupil's phone checks the
//!    chain and the window against its clock ([`verify_gate_code`]) and stores the
//!    resulting [`GateProof`] bound to the pupil, the device and the scan time
//!    ([`GateProof::bind`], `KPB1.`) in the check-in record, so that a classmate who reads
//!    the booking cannot reuse it; the server re-verifies it against the claimed scan
//!    time ([`verify_bound_gate_proof_at`]).
//! 2. **Pupil pass** (`KPP1.`, 151 characters): signed by the server
//!    ([`ServerSigner::issue_pass`]), scanned by a teacher's or gate device
//!    ([`verify_pass`]) with a synced [`RevocationList`].
//!
//! Sans-IO: keys come in as 32-byte seeds, time as `now_ms` (unix milliseconds). No code
//! contains a name or any personal data beyond the pseudonymous pupil id. See
//! `docs/proofs.md` for the byte layouts.

mod bound;
mod codec;
mod error;
mod gate;
mod gate_cert;
mod gate_proof;
mod pass;
mod revocation;
mod server_key;
mod window;

pub use bound::{BoundGateProof, verify_bound_gate_proof_at};
pub use codec::MAX_CODE_CHARS;
pub use error::ProofError;
pub use gate::{GateKeyMismatch, GateSigner, gate_code_time, gate_public_key, verify_gate_code};
pub use gate_cert::{GateDayCert, SignedGateCert};
pub use gate_proof::{GateProof, verify_gate_proof_at};
pub use pass::{PassProof, verify_pass};
pub use revocation::RevocationList;
pub use server_key::{ServerPublicKey, ServerSigner};
pub use window::{
    DAY_MS, WINDOW_MS, WINDOW_TOLERANCE, WINDOWS_PER_DAY, day_of_window, utc_day, window_at,
    window_start_ms,
};
