//! `kepu-server admin …`: the admin operations run directly against the database. Output
//! goes to stdout (ids, codes, JSON); a progress bar shows on large CSV imports when
//! stderr is a terminal.

use std::io::Write;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId};
use uuid::Uuid;

use crate::accounts::{Accounts, Role};
use crate::clock::now_ms;
use crate::config::{AdminCommand, Config};
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::store::NewUser;

/// Rows above which the import shows a progress bar.
const PROGRESS_THRESHOLD: usize = 1000;

fn parse_id(text: &str, kind: &'static str) -> Result<Uuid> {
    Uuid::parse_str(text.trim()).map_err(|_| Error::InvalidInput(format!("malformed {kind} id")))
}

/// Runs one admin subcommand, writing its result to `out`.
///
/// # Errors
/// Bad input, unknown records, or a database failure.
pub async fn execute(config: &Config, command: AdminCommand, out: &mut impl Write) -> Result<()> {
    let store = crate::open_store(config).await?;
    let accounts = Accounts::new(store.clone());
    let result = execute_with(&accounts, command, out).await;
    store.close().await;
    result
}

/// Runs one admin subcommand on an open store.
///
/// # Errors
/// Bad input, unknown records, or a database failure.
pub async fn execute_with(
    accounts: &Accounts,
    command: AdminCommand,
    out: &mut impl Write,
) -> Result<()> {
    let store = accounts.store();
    match command {
        AdminCommand::CreateCity { name } => {
            let city = store.create_city(new_id(), &name).await?;
            writeln!(out, "{}", city.id)?;
        }
        AdminCommand::CreateCounty { city, name } => {
            let county = store
                .create_county(new_id(), parse_id(&city, "city")?, &name)
                .await?;
            writeln!(out, "{}", county.id)?;
        }
        AdminCommand::CreateSchool { county, name } => {
            let school = store
                .create_school(new_id(), parse_id(&county, "county")?, &name)
                .await?;
            writeln!(out, "{}", school.id)?;
        }
        AdminCommand::CreateVenue { county, name, kind } => {
            let venue = store
                .create_venue(new_id(), parse_id(&county, "county")?, &name, &kind)
                .await?;
            writeln!(out, "{}", venue.id)?;
        }
        AdminCommand::CreateUser {
            role,
            school,
            venue,
            display_name,
        } => {
            let role = Role::parse_user(&role).map_err(|e| Error::InvalidInput(e.to_string()))?;
            let user = NewUser {
                id: new_id(),
                role,
                school_id: school
                    .as_deref()
                    .map(|s| parse_id(s, "school"))
                    .transpose()?,
                venue_id: venue.as_deref().map(|v| parse_id(v, "venue")).transpose()?,
                display_name,
                external_ref: None,
            };
            store.create_user(&user, now_ms()).await?;
            let issued = accounts
                .issue_enrollment_code(user.id, crate::accounts::DEFAULT_CODE_TTL_DAYS)
                .await?;
            writeln!(out, "user {}", user.id)?;
            writeln!(out, "enrollment code {}", issued.code.expose())?;
        }
        AdminCommand::CreateEdge { venue, days } => {
            let venue = parse_id(&venue, "venue")?;
            let user = crate::edge::create(store, venue, now_ms()).await?;
            let issued = accounts.issue_enrollment_code(user, days).await?;
            writeln!(out, "user {user}")?;
            writeln!(out, "enrollment code {}", issued.code.expose())?;
        }
        AdminCommand::EnrollCode { user, days } => {
            let issued = accounts
                .issue_enrollment_code(parse_id(&user, "user")?, days)
                .await?;
            writeln!(out, "{}", issued.code.expose())?;
        }
        AdminCommand::SetLogin { user, login } => {
            let password = match std::env::var("KEPU_LOGIN_PASSWORD") {
                Ok(p) if !p.is_empty() => p,
                _ => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            accounts
                .set_web_login(parse_id(&user, "user")?, &login, &password)
                .await?;
            writeln!(out, "login {} set", login.trim())?;
        }
        AdminCommand::ImportPupils { school, file } => {
            let school = SchoolId(parse_id(&school, "school")?);
            if store.school(school.0).await?.is_none() {
                return Err(Error::not_found("school", school));
            }
            let input = std::fs::read(&file)?;
            let (rows, errors) = crate::accounts::parse_pupils_csv(&input)?;
            let bar = if rows.len() >= PROGRESS_THRESHOLD {
                ProgressBar::with_draw_target(Some(rows.len() as u64), ProgressDrawTarget::stderr())
            } else {
                ProgressBar::hidden()
            };
            if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} pupils {eta}") {
                bar.set_style(style);
            }
            let report = accounts
                .import_pupils(school, rows, errors, |done| bar.set_position(done))
                .await?;
            bar.finish_and_clear();
            writeln!(out, "imported {} pupils", report.imported)?;
            for error in &report.errors {
                writeln!(out, "line {}: {}", error.line, error.reason)?;
            }
            for pupil in &report.pupils {
                writeln!(out, "line {} pupil {}", pupil.line, pupil.pupil_id)?;
            }
        }
        AdminCommand::ErasePupil { pupil } => {
            let erased = accounts
                .erase_pupil(PupilId(parse_id(&pupil, "pupil")?))
                .await?;
            if erased.changed {
                writeln!(
                    out,
                    "erased; {} device(s) revoked",
                    erased.revoked_devices.len()
                )?;
            } else {
                writeln!(out, "already erased")?;
            }
        }
        AdminCommand::RevokeDevice { device } => {
            let device = DeviceId(parse_id(&device, "device")?);
            if store.device(device.0).await?.is_none() {
                return Err(Error::not_found("device", device));
            }
            let revoked = accounts.authenticator().revoke(device).await?;
            writeln!(
                out,
                "{}",
                if revoked {
                    "revoked"
                } else {
                    "already revoked"
                }
            )?;
        }
        AdminCommand::ListDevices { user } => {
            let user = user.as_deref().map(|u| parse_id(u, "user")).transpose()?;
            for device in store.list_devices(user).await? {
                let line = serde_json::to_string(&device)
                    .map_err(|e| Error::InvalidInput(e.to_string()))?;
                writeln!(out, "{line}")?;
            }
        }
        AdminCommand::MinAppVersion {
            role,
            version,
            clear,
        } => {
            let role = Role::parse_user(&role).map_err(|_| {
                Error::InvalidInput(
                    "role must be pupil, volunteer, teacher, venue-staff or bureau-admin".into(),
                )
            })?;
            let version = if clear { None } else { version.as_deref() };
            crate::fleet::set_minimum(store, role, version, now_ms()).await?;
            for (role, version) in store.min_app_versions().await? {
                writeln!(out, "{role}\t{version}")?;
            }
        }
        AdminCommand::RebuildProjections => {
            let n = crate::records::rebuild(store).await?;
            writeln!(out, "rebuilt the records of {n} documents")?;
        }
    }
    Ok(())
}
