//! Online steps that produce offline proofs: a gate device certifies its key for the day
//! (`POST /api/gates/day-cert`) and then shows rotating codes without a network; a pupil's
//! device or a teacher fetches a pupil's pass (`GET /api/pupils/{id}/pass`).

use serde::{Deserialize, Serialize};

use kepu_sync_core::ids::PupilId;
use kepu_sync_core::proof::{
    GateSigner, ServerPublicKey, SignedGateCert, gate_public_key, verify_pass,
};
use kepu_sync_core::writer::Role;

use super::actions::parse_id;
use super::core::{Core, now_ms, random};
use super::enroll::call;
use super::error::{Error, Result};

/// Meta keys of the gate's secret day seed (hex) and the server's certificate for it.
const GATE_SEED_KEY: &str = "gate_day_seed";
const GATE_CERT_KEY: &str = "gate_day_cert";

#[derive(Serialize)]
struct DayCertRequest {
    gate_key: String,
}

#[derive(Deserialize)]
struct DayCert {
    cert: String,
}

#[derive(Deserialize)]
struct Pass {
    pass: String,
}

impl Core {
    fn bearer(&self, request: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder> {
        Ok(request.bearer_auth(self.require_identity()?.token))
    }

    /// Gate (venue staff device): makes a fresh day key, has the server certify it
    /// (online) and keeps both on the device. Returns the certificate's expiry (unix ms).
    ///
    /// # Errors
    /// Not venue staff, network, refusal, or a certificate that does not verify.
    pub async fn certify_gate_day(&self) -> Result<i64> {
        let me = self.require_identity()?;
        if me.role != Role::VenueStaff {
            return Err(Error::InvalidInput(
                "only a venue's staff devices act as gates".into(),
            ));
        }
        let seed = random::<32>();
        let public = ServerPublicKey::from_bytes(&gate_public_key(&seed))
            .map_err(|_| Error::Other("could not make a gate key".into()))?;
        let url = format!("{}/api/gates/day-cert", self.server_url());
        let request = self.bearer(self.http.post(url).json(&DayCertRequest {
            gate_key: public.to_base64(),
        }))?;
        let answer: DayCert = call(request, "gate certificate").await?;
        let cert = SignedGateCert::decode(answer.cert.trim())
            .map_err(|_| Error::Other("malformed gate certificate".into()))?;
        let key = self
            .server_key()
            .ok_or_else(|| Error::InvalidInput("no server public key configured".into()))?;
        cert.verify(&key)
            .map_err(|_| Error::Other("the gate certificate does not verify".into()))?;
        let expires = cert.cert().expires_ms;
        GateSigner::new(seed, cert)
            .map_err(|_| Error::Other("the server certified another key".into()))?;
        let seed_hex = hex::encode(seed);
        let cert_text = cert.encode();
        self.set_metas(&[
            (GATE_SEED_KEY, Some(seed_hex.as_str())),
            (GATE_CERT_KEY, Some(cert_text.as_str())),
        ])?;
        Ok(expires)
    }

    /// Gate: the rotating code to show now (offline), signed with the certified day key.
    ///
    /// # Errors
    /// No certificate for today yet (call [`Core::certify_gate_day`] online).
    pub fn gate_code(&self) -> Result<String> {
        self.require_identity()?;
        let missing =
            || Error::InvalidInput("no gate certificate for today; certify online".into());
        let seed: [u8; 32] = hex::decode(self.meta(GATE_SEED_KEY)?.ok_or_else(missing)?)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Storage("stored gate key is corrupt".into()))?;
        let cert = SignedGateCert::decode(&self.meta(GATE_CERT_KEY)?.ok_or_else(missing)?)
            .map_err(|_| Error::Storage("stored gate certificate is corrupt".into()))?;
        let signer = GateSigner::new(seed, cert)
            .map_err(|_| Error::Storage("stored gate key is corrupt".into()))?;
        let now = now_ms();
        if !signer.covers(now) {
            return Err(missing());
        }
        Ok(signer.code_at(now))
    }

    /// Fetches a pupil's current pass (online): `pupil` `None` is the pupil of this
    /// device; a teacher names a pupil of their school. The pass is checked against the
    /// server key before it is returned.
    ///
    /// # Errors
    /// Network, refusal (not allowed), malformed id, or a pass that does not verify.
    pub async fn fetch_pupil_pass(&self, pupil: Option<&str>) -> Result<String> {
        let me = self.require_identity()?;
        let pupil: PupilId = match pupil {
            Some(p) => parse_id(p, "pupil")?,
            None => me
                .pupil
                .ok_or_else(|| Error::InvalidInput("this device has no pupil".into()))?,
        };
        let url = format!("{}/api/pupils/{pupil}/pass", self.server_url());
        let answer: Pass = call(self.bearer(self.http.get(url))?, "pupil pass").await?;
        if let Some(key) = self.server_key() {
            verify_pass(answer.pass.trim(), &key, now_ms(), &|_, _| false)
                .map_err(|_| Error::Other("the pupil pass does not verify".into()))?;
        }
        Ok(answer.pass.trim().to_owned())
    }
}
