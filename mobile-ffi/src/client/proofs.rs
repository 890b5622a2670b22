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

/// Meta keys of the gate's secret day seed (hex) and the server's certificates for it:
/// the UTC day it was certified on and the coming one (the UTC day turns at 08:00 Beijing
/// time, so a gate prepared before opening needs the next day's).
const GATE_SEED_KEY: &str = "gate_day_seed";
const GATE_CERT_KEY: &str = "gate_day_cert";
const GATE_NEXT_CERT_KEY: &str = "gate_next_day_cert";

#[derive(Serialize)]
struct DayCertRequest {
    gate_key: String,
}

#[derive(Deserialize)]
struct DayCert {
    cert: String,
    /// The coming UTC day's certificate (absent from servers before it was added).
    next: Option<NextDayCert>,
}

#[derive(Deserialize)]
struct NextDayCert {
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

    /// Gate (venue staff device): makes a fresh day key, has the server certify it for
    /// today's UTC day and the coming one (online, ADR 0204) and keeps them on the device.
    /// Returns the later certificate's expiry (unix ms).
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
        let key = self
            .server_key()
            .ok_or_else(|| Error::InvalidInput("no server public key configured".into()))?;
        let (cert, next) = checked_certs(&answer, &key, seed)?;
        let expires = next.as_ref().map_or(cert.cert().expires_ms, |n| {
            n.cert().expires_ms.max(cert.cert().expires_ms)
        });
        let seed_hex = hex::encode(seed);
        let cert_text = cert.encode();
        let next_text = next.map(|n| n.encode());
        self.set_metas(&[
            (GATE_SEED_KEY, Some(seed_hex.as_str())),
            (GATE_CERT_KEY, Some(cert_text.as_str())),
            (GATE_NEXT_CERT_KEY, next_text.as_deref()),
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
        // Read as one set: a certification written at the same moment is all or nothing.
        let [seed, cert, next] = self.metas([GATE_SEED_KEY, GATE_CERT_KEY, GATE_NEXT_CERT_KEY])?;
        let seed: [u8; 32] = hex::decode(seed.ok_or_else(missing)?)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Storage("stored gate key is corrupt".into()))?;
        let mut certs = vec![cert.ok_or_else(missing)?];
        certs.extend(next);
        let now = now_ms();
        signer_covering(seed, &certs, now)?
            .map(|signer| signer.code_at(now))
            .ok_or_else(missing)
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

/// The server's answer to a day-certificate request, checked: each certificate signed by
/// the server for this gate's key; the coming day's (if sent) for the same venue and the
/// day after today's. A server before ADR 0204 sends no coming day's certificate.
fn checked_certs(
    answer: &DayCert,
    key: &ServerPublicKey,
    seed: [u8; 32],
) -> Result<(SignedGateCert, Option<SignedGateCert>)> {
    let checked = |text: &str| {
        let cert = SignedGateCert::decode(text.trim())
            .map_err(|_| Error::Other("malformed gate certificate".into()))?;
        cert.verify(key)
            .map_err(|_| Error::Other("the gate certificate does not verify".into()))?;
        GateSigner::new(seed, cert)
            .map_err(|_| Error::Other("the server certified another key".into()))?;
        Ok::<_, Error>(cert)
    };
    let cert = checked(&answer.cert)?;
    let next = answer.next.as_ref().map(|n| checked(&n.cert)).transpose()?;
    if let Some(n) = &next
        && (n.cert().venue != cert.cert().venue
            || Some(n.cert().day) != cert.cert().day.checked_add(1))
    {
        return Err(Error::Other(
            "the coming day's gate certificate is for another venue or day".into(),
        ));
    }
    Ok((cert, next))
}

/// The gate signer of the stored certificate whose day and validity cover `now`, if any.
fn signer_covering(seed: [u8; 32], certs: &[String], now: i64) -> Result<Option<GateSigner>> {
    for text in certs {
        let cert = SignedGateCert::decode(text)
            .map_err(|_| Error::Storage("stored gate certificate is corrupt".into()))?;
        let signer = GateSigner::new(seed, cert)
            .map_err(|_| Error::Storage("stored gate key is corrupt".into()))?;
        if signer.covers(now) {
            return Ok(Some(signer));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use kepu_sync_core::ids::VenueId;
    use kepu_sync_core::proof::{DAY_MS, GateDayCert, ServerSigner, verify_gate_code};

    use super::*;

    const SEED: [u8; 32] = [5; 32];
    const DAY: u32 = 20_500;

    fn cert(server: &ServerSigner, day: u32) -> String {
        server
            .certify_gate(GateDayCert {
                venue: VenueId::from_bytes([7; 16]),
                day,
                gate_key: gate_public_key(&SEED),
                expires_ms: (i64::from(day) + 1) * DAY_MS + 3_600_000,
            })
            .encode()
    }

    fn answer(cert: String, next: Option<String>) -> DayCert {
        DayCert {
            cert,
            next: next.map(|cert| NextDayCert { cert }),
        }
    }

    /// The coming day's certificate is kept only when it is the server's, for this key,
    /// this venue and the day after; an answer without it (an older server) keeps one.
    #[test]
    fn the_coming_days_certificate_must_follow_today_at_the_same_venue() {
        let server = ServerSigner::from_seed([9; 32]);
        let key = server.public();
        let (today, next) = checked_certs(
            &answer(cert(&server, DAY), Some(cert(&server, DAY + 1))),
            &key,
            SEED,
        )
        .unwrap();
        assert_eq!(
            (today.cert().day, next.map(|n| n.cert().day)),
            (DAY, Some(DAY + 1))
        );
        let (_, none) = checked_certs(&answer(cert(&server, DAY), None), &key, SEED).unwrap();
        assert!(none.is_none());
        let elsewhere = server
            .certify_gate(GateDayCert {
                venue: VenueId::from_bytes([8; 16]),
                day: DAY + 1,
                gate_key: gate_public_key(&SEED),
                expires_ms: (i64::from(DAY) + 2) * DAY_MS,
            })
            .encode();
        let forger = ServerSigner::from_seed([3; 32]);
        for (what, bad) in [
            ("the day after tomorrow", cert(&server, DAY + 2)),
            ("today again", cert(&server, DAY)),
            ("another venue", elsewhere),
            ("another server", cert(&forger, DAY + 1)),
            ("not a certificate", "KPC1.x".to_owned()),
        ] {
            let got = checked_certs(&answer(cert(&server, DAY), Some(bad)), &key, SEED);
            assert!(matches!(got, Err(Error::Other(_))), "{what}: {got:?}");
        }
        // Another gate's key: refused too.
        let got = checked_certs(
            &answer(cert(&server, DAY), Some(cert(&server, DAY + 1))),
            &key,
            [6; 32],
        );
        assert!(got.is_err());
    }

    /// A gate certified at 07:30 Beijing time (23:30 UTC) with today's and the coming
    /// day's certificates shows genuine codes on both sides of 08:00, and none once both
    /// days are over.
    #[test]
    fn a_gate_certified_before_eight_shows_codes_after_eight() {
        let server = ServerSigner::from_seed([9; 32]);
        let certs = [cert(&server, DAY), cert(&server, DAY + 1)];
        let start_of_next = i64::from(DAY + 1) * DAY_MS;
        for now in [
            start_of_next - 30 * 60_000,
            start_of_next + 60_000,
            start_of_next + 20 * 3_600_000,
        ] {
            let signer = signer_covering(SEED, &certs, now)
                .unwrap()
                .expect("a certificate covers it");
            verify_gate_code(&signer.code_at(now), &server.public(), now, None)
                .expect("the code verifies at the gate's time");
        }
        // Only today's (a server before the coming day's was added): none after 08:00.
        assert!(
            signer_covering(SEED, &certs[..1], start_of_next + 60_000)
                .unwrap()
                .is_none()
        );
        assert!(
            signer_covering(SEED, &certs, start_of_next + DAY_MS + 60_000)
                .unwrap()
                .is_none()
        );
        // A corrupt stored certificate is a storage error, not a code.
        let err = signer_covering(SEED, &["KPC1.x".to_owned()], start_of_next).unwrap_err();
        assert!(matches!(err, Error::Storage(_)), "{err:?}");
    }
}
