//! The pupil's pass: a server-signed code shown by a pupil (on a phone or printed card)
//! and scanned by a teacher's or gate device.

use super::codec::{self, DOMAIN_PUPIL_PASS, PUPIL_PASS, Reader, SIG_LEN};
use super::{ProofError, ServerPublicKey, ServerSigner};
use crate::ids::{PupilId, SchoolId};

/// The verified content of a pupil pass. No name: the pupil id is pseudonymous and only
/// the school maps it to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PassProof {
    /// The pupil's pseudonymous id.
    pub pupil: PupilId,
    /// The pupil's school.
    pub school: SchoolId,
    /// The pass's serial number for this pupil; a lost pass is revoked by serial and a
    /// new one issued with the next serial.
    pub serial: u32,
    /// The pass is refused from this instant on (unix milliseconds).
    pub expires_ms: i64,
}

impl PassProof {
    /// Length of the signed fields.
    const LEN: usize = 16 + 16 + 4 + 8;

    fn to_bytes(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(self.pupil.as_bytes());
        out[16..32].copy_from_slice(self.school.as_bytes());
        out[32..36].copy_from_slice(&self.serial.to_be_bytes());
        out[36..].copy_from_slice(&self.expires_ms.to_be_bytes());
        out
    }
}

impl ServerSigner {
    /// Issues a pupil pass.
    ///
    /// Text: `KPP1.` + base64url of 109 bytes = **151 characters** (fits a QR code of
    /// version 8 in byte mode at error correction level M). Layout: kind byte `0x21` ·
    /// `pupil` (16, raw UUID) · `school` (16, raw UUID) · `serial` (4, u32 BE) ·
    /// `expires_ms` (8, i64 BE) · server signature (64) over `"kepu/pupil-pass/v1\0"`
    /// followed by the 44 field bytes.
    #[must_use]
    pub fn issue_pass(
        &self,
        pupil: PupilId,
        school: SchoolId,
        serial: u32,
        expires_ms: i64,
    ) -> String {
        let fields = PassProof {
            pupil,
            school,
            serial,
            expires_ms,
        }
        .to_bytes();
        let signature = self.sign(DOMAIN_PUPIL_PASS, &[&fields]);
        let mut body = Vec::with_capacity(PassProof::LEN + SIG_LEN);
        body.extend_from_slice(&fields);
        body.extend_from_slice(&signature);
        codec::encode(PUPIL_PASS, &body)
    }
}

/// Verifies a scanned pupil pass offline, against the scanning device's clock `now_ms`
/// and its synced revocation list (`revoked(pupil, serial)`, see
/// [`super::RevocationList::is_revoked`]).
///
/// Checks, in order: the code's form (`Malformed`, `WrongKind`), the server's signature
/// (`BadServerSignature`), revocation (`Revoked`), expiry (`PassExpired`). `revoked` is
/// only called for a pass whose signature is valid. The server re-verifies a synced
/// check-in the same way, with the claimed scan time as `now_ms`.
pub fn verify_pass(
    code: &str,
    server: &ServerPublicKey,
    now_ms: i64,
    revoked: &dyn Fn(PupilId, u32) -> bool,
) -> Result<PassProof, ProofError> {
    let body = codec::decode(PUPIL_PASS, code)?;
    let mut r = Reader::new(&body);
    let fields: [u8; PassProof::LEN] = r.array()?;
    let signature: [u8; SIG_LEN] = r.array()?;
    r.finish()?;
    if !server.verifies(DOMAIN_PUPIL_PASS, &[&fields], &signature) {
        return Err(ProofError::BadServerSignature);
    }
    let mut r = Reader::new(&fields);
    let pass = PassProof {
        pupil: PupilId::from_bytes(r.array()?),
        school: SchoolId::from_bytes(r.array()?),
        serial: r.u32()?,
        expires_ms: r.i64()?,
    };
    r.finish()?;
    if revoked(pass.pupil, pass.serial) {
        return Err(ProofError::Revoked);
    }
    if now_ms >= pass.expires_ms {
        return Err(ProofError::PassExpired);
    }
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proof::RevocationList;
    use crate::proof::codec::testing::{
        flip_bit, flip_payload_bit, qr_version_m, single_bit_flips,
    };

    const NOW: i64 = 1_757_000_012_345;
    const PUPIL: PupilId = PupilId::from_bytes([5; 16]);
    const SCHOOL: SchoolId = SchoolId::from_bytes([6; 16]);
    const EXPIRES: i64 = NOW + 180 * 86_400_000;

    fn server() -> ServerSigner {
        ServerSigner::from_seed([1; 32])
    }

    fn pass() -> String {
        server().issue_pass(PUPIL, SCHOOL, 3, EXPIRES)
    }

    fn none(_: PupilId, _: u32) -> bool {
        false
    }

    fn verify(code: &str, now_ms: i64) -> Result<PassProof, ProofError> {
        verify_pass(code, &server().public(), now_ms, &none)
    }

    #[test]
    fn valid_pass_is_accepted() {
        let proof = verify(&pass(), NOW).unwrap();
        assert_eq!(
            proof,
            PassProof {
                pupil: PUPIL,
                school: SCHOOL,
                serial: 3,
                expires_ms: EXPIRES
            }
        );
    }

    #[test]
    fn expired_pass_is_refused() {
        assert!(verify(&pass(), EXPIRES - 1).is_ok());
        assert_eq!(verify(&pass(), EXPIRES), Err(ProofError::PassExpired));
    }

    #[test]
    fn revoked_pass_is_refused_but_other_serials_are_not() {
        let mut list = RevocationList::new();
        list.revoke(PUPIL, 3);
        let revoked = |p, s| list.is_revoked(p, s);
        let public = server().public();
        assert_eq!(
            verify_pass(&pass(), &public, NOW, &revoked),
            Err(ProofError::Revoked)
        );
        let next = server().issue_pass(PUPIL, SCHOOL, 4, EXPIRES);
        assert!(verify_pass(&next, &public, NOW, &revoked).is_ok());
    }

    #[test]
    fn pass_signed_by_another_server_is_refused() {
        let forged = ServerSigner::from_seed([9; 32]).issue_pass(PUPIL, SCHOOL, 3, EXPIRES);
        assert_eq!(verify(&forged, NOW), Err(ProofError::BadServerSignature));
    }

    #[test]
    fn revocation_list_is_not_consulted_for_forged_passes() {
        let forged = ServerSigner::from_seed([9; 32]).issue_pass(PUPIL, SCHOOL, 3, EXPIRES);
        let called = std::cell::Cell::new(false);
        let revoked = |_, _| {
            called.set(true);
            false
        };
        assert!(verify_pass(&forged, &server().public(), NOW, &revoked).is_err());
        assert!(!called.get());
    }

    #[test]
    fn gate_code_shown_to_pass_scanner_is_wrong_kind() {
        let not_a_pass = pass().replacen("KPP1", "KPG1", 1);
        assert_eq!(verify(&not_a_pass, NOW), Err(ProofError::WrongKind));
    }

    #[test]
    fn pass_is_151_chars_and_fits_qr_version_8_m() {
        let code = pass();
        assert!(code.starts_with("KPP1."));
        assert_eq!(1 + PassProof::LEN + SIG_LEN, 109);
        assert_eq!(code.len(), 151);
        assert_eq!(qr_version_m(code.len()), Some(8));
    }

    #[test]
    fn every_single_bit_flip_of_a_pass_is_refused() {
        let code = pass();
        for flipped in single_bit_flips(&code) {
            assert!(verify(&flipped, NOW).is_err());
        }
        for pos in 0..109 {
            for bit in 0..8 {
                let flipped = flip_payload_bit(&code, pos, bit).unwrap();
                assert!(verify(&flipped, NOW).is_err());
            }
        }
    }

    #[test]
    fn errors_never_echo_the_pass_or_ids() {
        let err = verify(&pass(), EXPIRES).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains(&PUPIL.to_string()));
        assert!(!text.contains(&pass()[5..20]));
    }

    proptest! {
        #[test]
        fn flipped_pass_text_bit_is_never_accepted(pos in 0usize..151, bit in 0u8..8) {
            if let Some(flipped) = flip_bit(&pass(), pos, bit) {
                prop_assert!(verify(&flipped, NOW).is_err());
            }
        }

        #[test]
        fn flipped_pass_payload_bit_is_never_accepted(pos in 0usize..109, bit in 0u8..8) {
            let flipped = flip_payload_bit(&pass(), pos, bit).unwrap();
            prop_assert!(verify(&flipped, NOW).is_err());
        }

        #[test]
        fn arbitrary_strings_never_panic_the_pass_verifier(text in ".{0,400}", now in any::<i64>()) {
            let _ = verify(&text, now);
        }
    }
}
