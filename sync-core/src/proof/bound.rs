//! A gate proof bound to the pupil and the device that scanned the gate code.
//!
//! A gate code is the same for every phone that scans it in one 30-second window, and a
//! check-in record is read by every pupil on the booking's roster. Stored as is, a gate
//! proof (`KPE1.`) could be copied into another pupil's check-in and would verify again.
//! So the phone does not store the gate's signature `(R, s)`. It keeps `R` and signs a
//! binding message (pupil, device, claimed scan time) with `s` used as a one-off Ed25519
//! secret scalar. The matching public point `s·B` equals `R + k·A` (the Ed25519
//! verification equation, `A` the gate's key, `k` the hash of `R`, `A` and the signed gate
//! message), so the server computes it from public values and checks the binding
//! signature under it. Only a device that saw the gate code knows `s`; a copier sees
//! `R` and a signature by `s`, from which `s` cannot be learnt, and cannot sign another
//! pupil's binding.
//!
//! Binary layout (224 bytes after the kind byte `0x51`): signed certificate (124) ·
//! `window` (4, u32 BE) · `R` (32) · binding signature (64) over
//! `"kepu/gate-bind/v1\0"` · pupil (16) · device (16) · `at` (8, i64 BE).

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::VerifyingKey;
use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use sha2::{Digest as _, Sha512};

use super::codec::{self, BOUND_GATE_PROOF, DOMAIN_GATE_BIND, DOMAIN_GATE_CODE, Reader, SIG_LEN};
use super::window::{day_of_window, within_tolerance};
use super::{GateProof, ProofError, ServerPublicKey, SignedGateCert};
use crate::ids::{DeviceId, PupilId, VenueId};

/// A gate proof bound to one pupil, one device and one claimed scan time (`KPB1.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundGateProof {
    cert: SignedGateCert,
    window: u32,
    r: [u8; 32],
    binding: [u8; SIG_LEN],
}

fn binding_message(pupil: PupilId, device: DeviceId, at_ms: i64) -> Vec<u8> {
    codec::signed_message(
        DOMAIN_GATE_BIND,
        &[pupil.as_bytes(), device.as_bytes(), &at_ms.to_be_bytes()],
    )
}

/// `k` of the Ed25519 verification equation for the gate's signature over the code.
fn challenge(r: &[u8; 32], gate_key: &[u8; 32], venue: VenueId, day: u32, window: u32) -> Scalar {
    let message = codec::signed_message(
        DOMAIN_GATE_CODE,
        &[&GateProof::sign_parts(venue, day, window)],
    );
    let mut h = Sha512::new();
    h.update(r);
    h.update(gate_key);
    h.update(&message);
    Scalar::from_hash(h)
}

impl GateProof {
    /// Binds this (verified) proof to `pupil`, `device` and the claimed scan time
    /// `at_ms`. Deterministic: the same inputs give the same text. `None` only for a proof
    /// whose gate signature is not canonical, which [`super::verify_gate_code`] never
    /// returns.
    #[must_use]
    pub fn bind(&self, pupil: PupilId, device: DeviceId, at_ms: i64) -> Option<BoundGateProof> {
        let sig = self.signature();
        let mut r = [0u8; 32];
        r.copy_from_slice(&sig[..32]);
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(&sig[32..]);
        let s: Scalar = Option::from(Scalar::from_canonical_bytes(s_bytes))?;
        let point = EdwardsPoint::mul_base(&s);
        let key = VerifyingKey::from(point);
        let mut prefix_hash = Sha512::new();
        prefix_hash.update(b"kepu/gate-bind-nonce/v1\0");
        prefix_hash.update(s_bytes);
        prefix_hash.update(r);
        let digest = prefix_hash.finalize();
        let mut hash_prefix = [0u8; 32];
        hash_prefix.copy_from_slice(&digest[..32]);
        let esk = ExpandedSecretKey {
            scalar: s,
            hash_prefix,
        };
        let binding = raw_sign::<Sha512>(&esk, &binding_message(pupil, device, at_ms), &key);
        Some(BoundGateProof {
            cert: *self.signed_cert(),
            window: self.window(),
            r,
            binding: binding.to_bytes(),
        })
    }
}

impl BoundGateProof {
    /// Length of the layout after the kind byte.
    pub(crate) const LEN: usize = SignedGateCert::LEN + 4 + 32 + SIG_LEN;

    /// The venue the gate is certified for.
    #[must_use]
    pub fn venue(&self) -> VenueId {
        self.cert.cert().venue
    }

    /// The 30-second window of the gate code.
    #[must_use]
    pub fn window(&self) -> u32 {
        self.window
    }

    /// `KPB1.` + base64url of 225 bytes = 305 characters.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut body = Vec::with_capacity(Self::LEN);
        self.cert.write(&mut body);
        body.extend_from_slice(&self.window.to_be_bytes());
        body.extend_from_slice(&self.r);
        body.extend_from_slice(&self.binding);
        codec::encode(BOUND_GATE_PROOF, &body)
    }

    /// Parses [`BoundGateProof::encode`] text without verifying it.
    ///
    /// # Errors
    /// [`ProofError::Malformed`] or [`ProofError::WrongKind`].
    pub fn decode(text: &str) -> Result<Self, ProofError> {
        let body = codec::decode(BOUND_GATE_PROOF, text)?;
        let mut r = Reader::new(&body);
        let proof = Self {
            cert: SignedGateCert::read(&mut r)?,
            window: r.u32()?,
            r: r.array()?,
            binding: r.array()?,
        };
        r.finish()?;
        Ok(proof)
    }
}

/// The server's check of a bound gate proof in a check-in of `pupil` recorded by
/// `device` at the claimed time `at_ms`: the certificate is the server's, the window's
/// day is the certificate's, the claimed time is inside the window (±1) and before the
/// certificate expired, and the binding signature verifies under `R + k·A`. A proof copied
/// from another pupil's or another device's check-in fails with
/// [`ProofError::NotBound`].
///
/// The caller must still compare [`BoundGateProof::venue`] with the booking's venue.
///
/// # Errors
/// The first check that fails.
pub fn verify_bound_gate_proof_at(
    text: &str,
    server: &ServerPublicKey,
    pupil: PupilId,
    device: DeviceId,
    at_ms: i64,
) -> Result<BoundGateProof, ProofError> {
    let proof = BoundGateProof::decode(text)?;
    proof.cert.verify(server)?;
    let cert = proof.cert.cert();
    if day_of_window(proof.window) != cert.day {
        return Err(ProofError::DayMismatch);
    }
    if at_ms >= cert.expires_ms {
        return Err(ProofError::CertExpired);
    }
    if !within_tolerance(proof.window, at_ms) {
        return Err(ProofError::OutsideWindow);
    }
    let gate_key = VerifyingKey::from_bytes(&cert.gate_key)
        .map_err(|_| ProofError::BadGateSignature)?
        .to_edwards();
    let r_point = CompressedEdwardsY(proof.r)
        .decompress()
        .filter(|p| !p.is_small_order())
        .ok_or(ProofError::BadGateSignature)?;
    let k = challenge(&proof.r, &cert.gate_key, cert.venue, cert.day, proof.window);
    let s_point = r_point + k * gate_key;
    if s_point.is_small_order() {
        return Err(ProofError::BadGateSignature);
    }
    let key = VerifyingKey::from(s_point);
    if codec::verify_signature(&key, &binding_message(pupil, device, at_ms), &proof.binding) {
        Ok(proof)
    } else {
        Err(ProofError::NotBound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::codec::testing::single_bit_flips;
    use crate::proof::gate::tests::{NOW, VENUE, gate, server};
    use crate::proof::verify_gate_code;

    const PUPIL: PupilId = PupilId::from_bytes([1; 16]);
    const DEVICE: DeviceId = DeviceId::from_bytes([2; 16]);

    fn bound(pupil: PupilId, device: DeviceId, at: i64) -> String {
        let code = gate(VENUE).code_at(NOW);
        verify_gate_code(&code, &server().public(), NOW, Some(VENUE))
            .unwrap()
            .bind(pupil, device, at)
            .unwrap()
            .encode()
    }

    #[test]
    fn a_bound_proof_verifies_for_its_pupil_device_and_time_only() {
        let text = bound(PUPIL, DEVICE, NOW);
        assert!(text.starts_with("KPB1."));
        assert_eq!(text.len(), 305);
        let public = server().public();
        let ok = verify_bound_gate_proof_at(&text, &public, PUPIL, DEVICE, NOW).unwrap();
        assert_eq!(ok.venue(), VENUE);
        let other_pupil = PupilId::from_bytes([3; 16]);
        let other_device = DeviceId::from_bytes([4; 16]);
        for (p, d, at) in [
            (other_pupil, DEVICE, NOW),
            (PUPIL, other_device, NOW),
            (other_pupil, other_device, NOW),
            (PUPIL, DEVICE, NOW + 1),
        ] {
            assert_eq!(
                verify_bound_gate_proof_at(&text, &public, p, d, at),
                Err(ProofError::NotBound)
            );
        }
    }

    #[test]
    fn the_text_of_a_bound_proof_does_not_hold_the_gate_signature() {
        let code = gate(VENUE).code_at(NOW);
        let proof = verify_gate_code(&code, &server().public(), NOW, None).unwrap();
        let text = proof.bind(PUPIL, DEVICE, NOW).unwrap().encode();
        let s = &proof.signature()[32..];
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.split_once('.').unwrap().1)
            .unwrap();
        assert!(!bytes.windows(32).any(|w| w == s));
    }

    #[test]
    fn a_bound_proof_is_refused_outside_its_window_and_from_another_server() {
        let later = NOW + 3 * crate::proof::WINDOW_MS;
        let text = bound(PUPIL, DEVICE, later);
        assert_eq!(
            verify_bound_gate_proof_at(&text, &server().public(), PUPIL, DEVICE, later),
            Err(ProofError::OutsideWindow)
        );
        let text = bound(PUPIL, DEVICE, NOW);
        let other = crate::proof::ServerSigner::from_seed([9; 32]).public();
        assert_eq!(
            verify_bound_gate_proof_at(&text, &other, PUPIL, DEVICE, NOW),
            Err(ProofError::BadServerSignature)
        );
    }

    #[test]
    fn every_single_bit_flip_of_a_bound_proof_is_refused() {
        let text = bound(PUPIL, DEVICE, NOW);
        let public = server().public();
        for flipped in single_bit_flips(&text) {
            assert!(verify_bound_gate_proof_at(&flipped, &public, PUPIL, DEVICE, NOW).is_err());
        }
    }
}
