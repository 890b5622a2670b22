//! A verified gate code, kept as evidence in a check-in record and re-verified by the
//! server when the phone syncs.

use ed25519_dalek::VerifyingKey;

use super::codec::{self, DOMAIN_GATE_CODE, GATE_PROOF, Kind, Reader, SIG_LEN};
use super::window::{day_of_window, window_start_ms, within_tolerance};
use super::{ProofError, ServerPublicKey, SignedGateCert};
use crate::ids::VenueId;

/// The full chain behind one gate code: the server-signed day certificate, the window and
/// the gate's signature over (venue, day, window).
///
/// Returned by [`super::verify_gate_code`] (phone, against its clock) and
/// [`verify_gate_proof_at`] (server, against the claimed scan time). The phone stores
/// [`GateProof::encode`] in the check-in record. [`GateProof::decode`] only parses: trust
/// the fields of a value returned by a `verify_*` function, not of a merely decoded one.
///
/// Binary layout (192 bytes after the kind byte): signed certificate (124, see
/// [`SignedGateCert`]) · `window` (4, u32 BE) · gate signature (64) over
/// `"kepu/gate-code/v1\0"` · venue (16) · day (4, u32 BE) · window (4, u32 BE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateProof {
    cert: SignedGateCert,
    window: u32,
    signature: [u8; SIG_LEN],
}

impl GateProof {
    /// Length of the layout after the kind byte.
    pub(crate) const LEN: usize = SignedGateCert::LEN + 4 + SIG_LEN;

    /// The venue the gate is certified for.
    #[must_use]
    pub fn venue(&self) -> VenueId {
        self.cert.cert().venue
    }

    /// The UTC day of the certificate (and of the window).
    #[must_use]
    pub fn day(&self) -> u32 {
        self.cert.cert().day
    }

    /// The 30-second window number (`unix ms / 30 000`).
    #[must_use]
    pub fn window(&self) -> u32 {
        self.window
    }

    /// The first millisecond of the window.
    #[must_use]
    pub fn window_start_ms(&self) -> i64 {
        window_start_ms(self.window)
    }

    /// The gate's public day key.
    #[must_use]
    pub fn gate_key(&self) -> [u8; 32] {
        self.cert.cert().gate_key
    }

    /// When the gate's certificate expires (unix milliseconds).
    #[must_use]
    pub fn cert_expires_ms(&self) -> i64 {
        self.cert.cert().expires_ms
    }

    /// The gate's signature over (venue, day, window).
    pub(crate) fn signature(&self) -> &[u8; SIG_LEN] {
        &self.signature
    }

    /// The signed certificate inside the proof.
    #[must_use]
    pub fn signed_cert(&self) -> &SignedGateCert {
        &self.cert
    }

    /// Refuses the proof unless it is for `venue` ([`ProofError::WrongVenue`]).
    pub fn require_venue(&self, venue: VenueId) -> Result<(), ProofError> {
        if self.venue() == venue {
            Ok(())
        } else {
            Err(ProofError::WrongVenue)
        }
    }

    /// The evidence text: `KPE1.` + base64url of 193 bytes (kind byte `0x31` · the
    /// 192-byte chain) = 263 characters.
    #[must_use]
    pub fn encode(&self) -> String {
        self.encode_as(GATE_PROOF)
    }

    /// Parses [`GateProof::encode`] text. Does not verify it: use
    /// [`verify_gate_proof_at`].
    pub fn decode(text: &str) -> Result<Self, ProofError> {
        Self::decode_as(GATE_PROOF, text)
    }

    pub(crate) fn sign_parts(venue: VenueId, day: u32, window: u32) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..16].copy_from_slice(venue.as_bytes());
        out[16..20].copy_from_slice(&day.to_be_bytes());
        out[20..].copy_from_slice(&window.to_be_bytes());
        out
    }

    pub(crate) fn new(cert: SignedGateCert, window: u32, signature: [u8; SIG_LEN]) -> Self {
        Self {
            cert,
            window,
            signature,
        }
    }

    pub(crate) fn encode_as(&self, kind: Kind) -> String {
        let mut body = Vec::with_capacity(Self::LEN);
        self.cert.write(&mut body);
        body.extend_from_slice(&self.window.to_be_bytes());
        body.extend_from_slice(&self.signature);
        codec::encode(kind, &body)
    }

    pub(crate) fn decode_as(kind: Kind, text: &str) -> Result<Self, ProofError> {
        let body = codec::decode(kind, text)?;
        let mut r = Reader::new(&body);
        let proof = Self {
            cert: SignedGateCert::read(&mut r)?,
            window: r.u32()?,
            signature: r.array()?,
        };
        r.finish()?;
        Ok(proof)
    }

    /// Verifies the whole chain at instant `at_ms`, in this order: server signature on
    /// the certificate, gate signature on the code, venue, window day against certificate
    /// day, certificate expiry, window within tolerance of `at_ms`.
    pub(crate) fn check(
        &self,
        server: &ServerPublicKey,
        at_ms: i64,
        expected_venue: Option<VenueId>,
    ) -> Result<(), ProofError> {
        self.cert.verify(server)?;
        let gate_key =
            VerifyingKey::from_bytes(&self.gate_key()).map_err(|_| ProofError::BadGateSignature)?;
        let message = codec::signed_message(
            DOMAIN_GATE_CODE,
            &[&Self::sign_parts(self.venue(), self.day(), self.window)],
        );
        if !codec::verify_signature(&gate_key, &message, &self.signature) {
            return Err(ProofError::BadGateSignature);
        }
        if let Some(venue) = expected_venue {
            self.require_venue(venue)?;
        }
        if day_of_window(self.window) != self.day() {
            return Err(ProofError::DayMismatch);
        }
        if at_ms >= self.cert_expires_ms() {
            return Err(ProofError::CertExpired);
        }
        if !within_tolerance(self.window, at_ms) {
            return Err(ProofError::OutsideWindow);
        }
        Ok(())
    }
}

/// Server-side re-verification of stored evidence: the same checks the phone made, but
/// against `scan_at_ms`, the scan time the check-in claims (the phone may sync hours or
/// days later, so the server's own clock is irrelevant). The claimed time must fall in
/// the proof's window (± [`super::WINDOW_TOLERANCE`]) and before the certificate expired.
///
/// The caller must still compare [`GateProof::venue`] with the venue the check-in claims
/// (or call [`GateProof::require_venue`]).
pub fn verify_gate_proof_at(
    proof: &str,
    server: &ServerPublicKey,
    scan_at_ms: i64,
) -> Result<GateProof, ProofError> {
    let proof = GateProof::decode(proof)?;
    proof.check(server, scan_at_ms, None)?;
    Ok(proof)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proof::codec::testing::{flip_bit, flip_payload_bit, qr_version_m};
    use crate::proof::gate::tests::{NOW, VENUE, gate, server};
    use crate::proof::{WINDOW_MS, verify_gate_code};

    fn evidence() -> String {
        let code = gate(VENUE).code_at(NOW);
        verify_gate_code(&code, &server().public(), NOW, Some(VENUE))
            .unwrap()
            .encode()
    }

    #[test]
    fn proof_round_trips_through_its_text() {
        let code = gate(VENUE).code_at(NOW);
        let proof = verify_gate_code(&code, &server().public(), NOW, None).unwrap();
        assert_eq!(GateProof::decode(&proof.encode()), Ok(proof));
        assert_eq!(proof.venue(), VENUE);
        assert_eq!(proof.window(), u32::try_from(NOW / WINDOW_MS).unwrap());
        assert!(proof.window_start_ms() <= NOW && NOW < proof.window_start_ms() + WINDOW_MS);
    }

    #[test]
    fn gate_proof_text_is_263_chars_and_fits_qr_version_12_m() {
        let text = evidence();
        assert!(text.starts_with("KPE1."));
        assert_eq!(GateProof::LEN + 1, 193);
        assert_eq!(text.len(), 263);
        assert_eq!(qr_version_m(text.len()), Some(12));
    }

    #[test]
    fn server_reverifies_proof_at_claimed_scan_time_not_its_clock() {
        let proof = verify_gate_proof_at(&evidence(), &server().public(), NOW + 20_000).unwrap();
        assert_eq!(proof.require_venue(VENUE), Ok(()));
        let other = VenueId::from_bytes([0xB0; 16]);
        assert_eq!(proof.require_venue(other), Err(ProofError::WrongVenue));
    }

    #[test]
    fn claimed_scan_time_outside_the_window_is_refused() {
        let text = evidence();
        for claimed in [NOW + 2 * WINDOW_MS, NOW - 2 * WINDOW_MS, NOW + 3_600_000] {
            assert_eq!(
                verify_gate_proof_at(&text, &server().public(), claimed),
                Err(ProofError::OutsideWindow)
            );
        }
    }

    #[test]
    fn proof_from_another_server_is_refused() {
        let other = crate::proof::ServerSigner::from_seed([9; 32]).public();
        assert_eq!(
            verify_gate_proof_at(&evidence(), &other, NOW),
            Err(ProofError::BadServerSignature)
        );
    }

    #[test]
    fn raw_gate_code_is_not_accepted_as_stored_evidence() {
        let code = gate(VENUE).code_at(NOW);
        assert_eq!(
            verify_gate_proof_at(&code, &server().public(), NOW),
            Err(ProofError::WrongKind)
        );
        assert_eq!(
            verify_gate_code(&evidence(), &server().public(), NOW, None),
            Err(ProofError::WrongKind)
        );
    }

    #[test]
    fn every_single_bit_flip_of_a_proof_is_refused() {
        let text = evidence();
        let public = server().public();
        for flipped in crate::proof::codec::testing::single_bit_flips(&text) {
            assert!(verify_gate_proof_at(&flipped, &public, NOW).is_err());
        }
    }

    proptest! {
        #[test]
        fn flipped_proof_payload_bit_is_never_accepted(pos in 0usize..193, bit in 0u8..8) {
            let text = flip_payload_bit(&evidence(), pos, bit).unwrap();
            prop_assert!(verify_gate_proof_at(&text, &server().public(), NOW).is_err());
        }

        #[test]
        fn flipped_proof_text_bit_is_never_accepted(pos in 0usize..263, bit in 0u8..8) {
            if let Some(text) = flip_bit(&evidence(), pos, bit) {
                prop_assert!(verify_gate_proof_at(&text, &server().public(), NOW).is_err());
            }
        }

        #[test]
        fn arbitrary_proof_text_never_panics(text in ".{0,400}", at in any::<i64>()) {
            let _ = GateProof::decode(&text);
            let _ = verify_gate_proof_at(&text, &server().public(), at);
        }
    }
}
