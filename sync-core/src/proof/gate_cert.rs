//! The server's certificate for a gate device's day key.

use super::codec::{self, DOMAIN_GATE_CERT, GATE_CERT, Reader, SIG_LEN};
use super::{ProofError, ServerPublicKey, ServerSigner};
use crate::ids::VenueId;

/// What the server certifies: "this gate key may sign codes for this venue on this UTC
/// day, until `expires_ms`".
///
/// Binary layout (60 bytes): `venue` (16, raw UUID) · `day` (4, u32 BE, days since
/// 1970-01-01 UTC, see [`super::utc_day`]) · `gate_key` (32, Ed25519 public key) ·
/// `expires_ms` (8, i64 BE, unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateDayCert {
    /// The venue the gate stands at.
    pub venue: VenueId,
    /// The UTC day number the key is valid for.
    pub day: u32,
    /// The gate's Ed25519 public key for that day (see [`super::gate_public_key`]).
    pub gate_key: [u8; 32],
    /// The certificate is refused from this instant on (unix milliseconds).
    pub expires_ms: i64,
}

impl GateDayCert {
    /// Length of the certificate fields.
    pub(crate) const LEN: usize = 16 + 4 + 32 + 8;

    pub(crate) fn to_bytes(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(self.venue.as_bytes());
        out[16..20].copy_from_slice(&self.day.to_be_bytes());
        out[20..52].copy_from_slice(&self.gate_key);
        out[52..].copy_from_slice(&self.expires_ms.to_be_bytes());
        out
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProofError> {
        Ok(Self {
            venue: VenueId::from_bytes(r.array()?),
            day: r.u32()?,
            gate_key: r.array()?,
            expires_ms: r.i64()?,
        })
    }
}

/// A [`GateDayCert`] with the server's signature: handed to the gate device (as
/// [`SignedGateCert::encode`] text) and embedded in every code the gate shows.
///
/// Binary layout (124 bytes): the 60 certificate bytes · server signature (64) over
/// `"kepu/gate-cert/v1\0"` followed by the 60 certificate bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedGateCert {
    cert: GateDayCert,
    signature: [u8; SIG_LEN],
}

impl SignedGateCert {
    /// Length of the signed certificate inside a code.
    pub(crate) const LEN: usize = GateDayCert::LEN + SIG_LEN;

    /// The certified fields (not yet verified unless this value came from
    /// [`SignedGateCert::verify`] or a `verify_*` function).
    #[must_use]
    pub fn cert(&self) -> &GateDayCert {
        &self.cert
    }

    /// Checks the server's signature only (not the expiry).
    pub fn verify(&self, server: &ServerPublicKey) -> Result<(), ProofError> {
        if server.verifies(DOMAIN_GATE_CERT, &[&self.cert.to_bytes()], &self.signature) {
            Ok(())
        } else {
            Err(ProofError::BadServerSignature)
        }
    }

    /// The certificate as text for the gate device: `KPC1.` + base64url of 125 bytes
    /// (kind byte `0x41` · 124 signed-certificate bytes) = 172 characters.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut body = Vec::with_capacity(Self::LEN);
        self.write(&mut body);
        codec::encode(GATE_CERT, &body)
    }

    /// Parses [`SignedGateCert::encode`] text. Does not verify it: call
    /// [`SignedGateCert::verify`].
    pub fn decode(text: &str) -> Result<Self, ProofError> {
        let body = codec::decode(GATE_CERT, text)?;
        let mut r = Reader::new(&body);
        let cert = Self::read(&mut r)?;
        r.finish()?;
        Ok(cert)
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.cert.to_bytes());
        out.extend_from_slice(&self.signature);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProofError> {
        Ok(Self {
            cert: GateDayCert::read(r)?,
            signature: r.array()?,
        })
    }
}

impl ServerSigner {
    /// Certifies a gate's day key.
    #[must_use]
    pub fn certify_gate(&self, cert: GateDayCert) -> SignedGateCert {
        SignedGateCert {
            cert,
            signature: self.sign(DOMAIN_GATE_CERT, &[&cert.to_bytes()]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::gate_public_key;

    fn cert() -> GateDayCert {
        GateDayCert {
            venue: VenueId::from_bytes([0xA0; 16]),
            day: 20_335,
            gate_key: gate_public_key(&[2; 32]),
            expires_ms: 1_757_030_400_000,
        }
    }

    #[test]
    fn signed_cert_round_trips_and_verifies() {
        let server = ServerSigner::from_seed([1; 32]);
        let signed = server.certify_gate(cert());
        let text = signed.encode();
        assert_eq!(text.len(), 172);
        assert!(text.starts_with("KPC1."));
        let back = SignedGateCert::decode(&text).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.cert(), &cert());
        assert_eq!(back.verify(&server.public()), Ok(()));
    }

    #[test]
    fn cert_signed_by_another_server_is_refused() {
        let forger = ServerSigner::from_seed([9; 32]);
        let signed = forger.certify_gate(cert());
        let server = ServerSigner::from_seed([1; 32]).public();
        assert_eq!(signed.verify(&server), Err(ProofError::BadServerSignature));
    }

    #[test]
    fn altered_cert_field_is_refused() {
        let server = ServerSigner::from_seed([1; 32]);
        let mut signed = server.certify_gate(cert());
        signed.cert.expires_ms += 86_400_000;
        assert_eq!(
            signed.verify(&server.public()),
            Err(ProofError::BadServerSignature)
        );
    }
}
