//! The gate device's rotating code and its offline verification on a phone.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey};

use super::codec::{self, DOMAIN_GATE_CODE, GATE_CODE};
use super::window::{utc_day, window_at};
use super::{GateProof, ProofError, ServerPublicKey, SignedGateCert};
use crate::ids::VenueId;

/// The public day key for a gate's 32-byte secret seed: what the gate sends to the
/// server to be certified as [`super::GateDayCert::gate_key`].
#[must_use]
pub fn gate_public_key(seed: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

/// The gate's seed does not belong to the certified gate key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("gate seed does not match the certified gate key")]
pub struct GateKeyMismatch;

/// A gate device's signer for one day: its secret day key and the server's certificate
/// for it. Shows a new code every 30 seconds ([`GateSigner::code_at`]).
///
/// The key is wiped from memory when dropped; `Debug` shows only the certificate.
pub struct GateSigner {
    key: SigningKey,
    cert: SignedGateCert,
}

impl GateSigner {
    /// The signer for a 32-byte secret seed and the server's certificate of its public
    /// key. Refused if the seed's public key is not the certified one.
    pub fn new(seed: [u8; 32], cert: SignedGateCert) -> Result<Self, GateKeyMismatch> {
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().to_bytes() == cert.cert().gate_key {
            Ok(Self { key, cert })
        } else {
            Err(GateKeyMismatch)
        }
    }

    /// The certificate the gate embeds in its codes.
    #[must_use]
    pub fn cert(&self) -> &SignedGateCert {
        &self.cert
    }

    /// Whether codes made at `now_ms` will verify: `now_ms` is on the certificate's UTC
    /// day and before its expiry. A gate should fetch a new certificate when this turns
    /// false.
    #[must_use]
    pub fn covers(&self, now_ms: i64) -> bool {
        let cert = self.cert.cert();
        utc_day(now_ms) == Some(cert.day) && now_ms < cert.expires_ms
    }

    /// The code to show at `now_ms`: the certificate, the window `now_ms / 30 000` and the
    /// gate's signature over (venue, certificate day, window).
    ///
    /// Text: `KPG1.` + base64url of 193 bytes (kind byte `0x11` · 124-byte signed
    /// certificate · 4-byte window · 64-byte gate signature) = **263 characters**, which
    /// fits a QR code of version 12 in byte mode at error correction level M.
    ///
    /// Never fails; a code made outside the certificate's day or validity is refused by
    /// the verifier (see [`GateSigner::covers`]).
    #[must_use]
    pub fn code_at(&self, now_ms: i64) -> String {
        let window = window_at(now_ms).unwrap_or(if now_ms < 0 { 0 } else { u32::MAX });
        let cert = self.cert.cert();
        let parts = GateProof::sign_parts(cert.venue, cert.day, window);
        let signature = self
            .key
            .sign(&codec::signed_message(DOMAIN_GATE_CODE, &[&parts]))
            .to_bytes();
        GateProof::new(self.cert, window, signature).encode_as(GATE_CODE)
    }
}

impl fmt::Debug for GateSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateSigner")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// Verifies a scanned gate code offline on a phone, against the phone's clock `now_ms`.
///
/// Checks, in order: the code's form (`Malformed`, `WrongKind`), the server's signature
/// on the gate certificate (`BadServerSignature`), the gate's signature on the code
/// (`BadGateSignature`), the venue if one is expected (`WrongVenue`), that the window's
/// UTC day is the certificate's day (`DayMismatch`), the certificate's expiry
/// (`CertExpired`), and that the window is the current one ± [`super::WINDOW_TOLERANCE`]
/// (`OutsideWindow`, e.g. a photo of the code replayed later).
///
/// Store [`GateProof::encode`] in the check-in record as evidence.
pub fn verify_gate_code(
    code: &str,
    server: &ServerPublicKey,
    now_ms: i64,
    expected_venue: Option<VenueId>,
) -> Result<GateProof, ProofError> {
    let proof = GateProof::decode_as(GATE_CODE, code)?;
    proof.check(server, now_ms, expected_venue)?;
    Ok(proof)
}

/// The start of a genuine gate code's window, whatever the verifier's clock says: the
/// code is checked (server certificate, gate signature, venue) at its own time. A phone
/// whose clock refuses a code as [`ProofError::OutsideWindow`] learns from it how far off
/// its clock is. `None` for a code that is not genuine at any time.
#[must_use]
pub fn gate_code_time(
    code: &str,
    server: &ServerPublicKey,
    expected_venue: Option<VenueId>,
) -> Option<i64> {
    let proof = GateProof::decode_as(GATE_CODE, code).ok()?;
    let at = proof.window_start_ms();
    proof.check(server, at, expected_venue).ok()?;
    Some(at)
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proof::codec::testing::{flip_bit, flip_payload_bit, qr_version_m};
    use crate::proof::{DAY_MS, GateDayCert, ServerSigner, WINDOW_MS};

    /// 2025-09-04 15:33:32 Beijing time; UTC day 20 335.
    pub(crate) const NOW: i64 = 1_757_000_012_345;
    pub(crate) const DAY: u32 = 20_335;
    pub(crate) const VENUE: VenueId = VenueId::from_bytes([0xA0; 16]);
    const GATE_SEED: [u8; 32] = [2; 32];

    pub(crate) fn server() -> ServerSigner {
        ServerSigner::from_seed([1; 32])
    }

    fn cert_for(venue: VenueId, expires_ms: i64) -> GateDayCert {
        GateDayCert {
            venue,
            day: DAY,
            gate_key: gate_public_key(&GATE_SEED),
            expires_ms,
        }
    }

    /// A gate at `venue` certified for today until the end of the UTC day.
    pub(crate) fn gate(venue: VenueId) -> GateSigner {
        let end_of_day = i64::from(DAY + 1) * DAY_MS;
        let cert = server().certify_gate(cert_for(venue, end_of_day));
        GateSigner::new(GATE_SEED, cert).unwrap()
    }

    fn verify_at(code: &str, now_ms: i64) -> Result<GateProof, ProofError> {
        verify_gate_code(code, &server().public(), now_ms, Some(VENUE))
    }

    #[test]
    fn a_genuine_code_tells_its_time_and_a_forged_one_does_not() {
        let code = gate(VENUE).code_at(NOW);
        let start = gate_code_time(&code, &server().public(), Some(VENUE)).unwrap();
        assert!(start <= NOW && NOW - start < WINDOW_MS);
        // A clock ten minutes off refuses the code, and the code says by how much.
        assert_eq!(
            verify_at(&code, NOW + 600_000),
            Err(ProofError::OutsideWindow)
        );
        assert_eq!(
            gate_code_time(&code, &server().public(), Some(VENUE)),
            Some(start)
        );
        // A gate signature altered (the last bytes of the payload) is not genuine at any time.
        let forged = flip_payload_bit(&code, 190, 3).unwrap();
        assert_eq!(
            gate_code_time(&forged, &server().public(), Some(VENUE)),
            None
        );
        let elsewhere = VenueId::from_bytes([0xA1; 16]);
        assert_eq!(
            gate_code_time(&code, &server().public(), Some(elsewhere)),
            None
        );
    }

    #[test]
    fn valid_gate_code_is_accepted_in_its_window() {
        let code = gate(VENUE).code_at(NOW);
        let proof = verify_at(&code, NOW).unwrap();
        assert_eq!(proof.venue(), VENUE);
        assert_eq!(proof.day(), DAY);
        assert_eq!(proof.gate_key(), gate_public_key(&GATE_SEED));
        assert_eq!(i64::from(proof.window()), NOW / WINDOW_MS);
    }

    #[test]
    fn gate_code_is_accepted_one_window_early_or_late() {
        let code = gate(VENUE).code_at(NOW);
        assert!(verify_at(&code, NOW - WINDOW_MS).is_ok());
        assert!(verify_at(&code, NOW + WINDOW_MS).is_ok());
    }

    #[test]
    fn replayed_gate_code_outside_window_is_refused() {
        let code = gate(VENUE).code_at(NOW);
        assert_eq!(
            verify_at(&code, NOW + 2 * WINDOW_MS),
            Err(ProofError::OutsideWindow)
        );
        assert_eq!(
            verify_at(&code, NOW - 2 * WINDOW_MS),
            Err(ProofError::OutsideWindow)
        );
        assert_eq!(
            verify_at(&code, NOW + 3_600_000),
            Err(ProofError::OutsideWindow)
        );
    }

    #[test]
    fn cert_signed_by_another_server_key_is_refused() {
        let forger = ServerSigner::from_seed([9; 32]);
        let cert = forger.certify_gate(cert_for(VENUE, NOW + DAY_MS));
        let code = GateSigner::new(GATE_SEED, cert).unwrap().code_at(NOW);
        assert_eq!(verify_at(&code, NOW), Err(ProofError::BadServerSignature));
    }

    #[test]
    fn code_signed_by_an_uncertified_gate_key_is_refused() {
        let cert = gate(VENUE).cert;
        let rogue = SigningKey::from_bytes(&[3; 32]);
        let window = window_at(NOW).unwrap();
        let parts = GateProof::sign_parts(VENUE, DAY, window);
        let signature = rogue
            .sign(&codec::signed_message(DOMAIN_GATE_CODE, &[&parts]))
            .to_bytes();
        let code = GateProof::new(cert, window, signature).encode_as(GATE_CODE);
        assert_eq!(verify_at(&code, NOW), Err(ProofError::BadGateSignature));
    }

    #[test]
    fn gate_signer_refuses_a_seed_that_is_not_certified() {
        let cert = gate(VENUE).cert;
        assert_eq!(GateSigner::new([3; 32], cert).err(), Some(GateKeyMismatch));
    }

    #[test]
    fn expired_cert_is_refused() {
        let cert = server().certify_gate(cert_for(VENUE, NOW - 1));
        let code = GateSigner::new(GATE_SEED, cert).unwrap().code_at(NOW);
        assert_eq!(verify_at(&code, NOW), Err(ProofError::CertExpired));
    }

    #[test]
    fn code_for_another_venue_is_refused() {
        let other = VenueId::from_bytes([0xB0; 16]);
        let code = gate(other).code_at(NOW);
        assert_eq!(verify_at(&code, NOW), Err(ProofError::WrongVenue));
        let proof = verify_gate_code(&code, &server().public(), NOW, None).unwrap();
        assert_eq!(proof.venue(), other);
    }

    #[test]
    fn code_made_on_another_day_than_its_cert_is_refused() {
        let cert = server().certify_gate(cert_for(VENUE, NOW + 3 * DAY_MS));
        let signer = GateSigner::new(GATE_SEED, cert).unwrap();
        assert!(signer.covers(NOW));
        assert!(!signer.covers(NOW + DAY_MS));
        let tomorrow = signer.code_at(NOW + DAY_MS);
        assert_eq!(
            verify_at(&tomorrow, NOW + DAY_MS),
            Err(ProofError::DayMismatch)
        );
    }

    #[test]
    fn pass_shown_to_gate_scanner_is_wrong_kind() {
        let pass = server().issue_pass(
            crate::ids::PupilId::from_bytes([5; 16]),
            crate::ids::SchoolId::from_bytes([6; 16]),
            1,
            NOW + DAY_MS,
        );
        assert_eq!(verify_at(&pass, NOW), Err(ProofError::WrongKind));
    }

    #[test]
    fn gate_code_is_263_chars_and_fits_qr_version_12_m() {
        let code = gate(VENUE).code_at(NOW);
        assert!(code.starts_with("KPG1."));
        assert_eq!(GateProof::LEN + 1, 193);
        assert_eq!(code.len(), 263);
        assert!(code.len() <= codec::MAX_CODE_CHARS);
        assert_eq!(qr_version_m(code.len()), Some(12));
    }

    #[test]
    fn errors_never_echo_the_code() {
        let code = gate(VENUE).code_at(NOW);
        let err = verify_at(&code, NOW + 2 * WINDOW_MS).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("KPG1"));
        assert!(!text.contains(&code[5..15]));
    }

    #[test]
    fn every_single_bit_flip_of_a_gate_code_is_refused() {
        let code = gate(VENUE).code_at(NOW);
        let flips = crate::proof::codec::testing::single_bit_flips(&code);
        // Flipping the top bit of an ASCII byte is not UTF-8; the other 7 bits are tried.
        assert_eq!(flips.len(), 263 * 7);
        for flipped in flips {
            assert!(verify_at(&flipped, NOW).is_err());
        }
        for pos in 0..193 {
            for bit in 0..8 {
                let flipped = flip_payload_bit(&code, pos, bit).unwrap();
                assert!(verify_at(&flipped, NOW).is_err());
            }
        }
    }

    #[test]
    fn extreme_clocks_do_not_panic() {
        let signer = gate(VENUE);
        for t in [i64::MIN, -1, 0, i64::MAX] {
            let code = signer.code_at(t);
            assert!(verify_at(&code, t).is_err());
            assert!(verify_at(&signer.code_at(NOW), t).is_err());
        }
    }

    proptest! {
        #[test]
        fn flipped_gate_code_text_bit_is_never_accepted(pos in 0usize..263, bit in 0u8..8) {
            let code = gate(VENUE).code_at(NOW);
            if let Some(flipped) = flip_bit(&code, pos, bit) {
                prop_assert!(verify_at(&flipped, NOW).is_err());
            }
        }

        #[test]
        fn flipped_gate_code_payload_bit_is_never_accepted(pos in 0usize..193, bit in 0u8..8) {
            let code = gate(VENUE).code_at(NOW);
            let flipped = flip_payload_bit(&code, pos, bit).unwrap();
            prop_assert!(verify_at(&flipped, NOW).is_err());
        }

        #[test]
        fn arbitrary_strings_never_panic_the_gate_verifier(text in ".{0,400}", now in any::<i64>()) {
            let _ = verify_gate_code(&text, &server().public(), now, Some(VENUE));
        }

        #[test]
        fn arbitrary_payloads_behind_a_valid_tag_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..220)) {
            use base64::Engine as _;
            let text = format!("KPG1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
            prop_assert!(verify_at(&text, NOW).is_err());
        }
    }
}
