//! The admin JSON API under `/api/admin/…`, for bureau administrators' devices. It mirrors
//! the `kepu-server admin` subcommands.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::devices::{Revoked, path_uuid, revoke_device};
use super::{AdminDevice, ApiJson};
use crate::accounts::{DEFAULT_CODE_TTL_DAYS, ImportReport, Role, parse_pupils_csv};
use crate::app_state::AppState;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::store::{City, County, DeviceRecord, NewUser, School, Venue};

/// Largest accepted pupils CSV, in bytes.
const MAX_CSV_BYTES: usize = 8 * 1024 * 1024;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/cities", post(create_city))
        .route("/api/admin/counties", post(create_county))
        .route("/api/admin/schools", post(create_school))
        .route("/api/admin/venues", post(create_venue))
        .route("/api/admin/users", post(create_user))
        .route("/api/admin/users/{id}/enrollment-codes", post(enroll_code))
        .route("/api/admin/venues/{id}/edges", post(create_edge))
        .route(
            "/api/admin/schools/{id}/pupils/import",
            post(import_pupils).layer(axum::extract::DefaultBodyLimit::max(MAX_CSV_BYTES)),
        )
        .route("/api/admin/schools/{id}/pupil-count", get(pupil_count))
        .route("/api/admin/pupils/{id}/erase", post(erase_pupil))
        .route("/api/admin/devices", get(list_devices))
        .route("/api/admin/devices/{id}/revoke", post(revoke))
        .route("/api/admin/min-app-versions", get(min_app_versions))
        .route(
            "/api/admin/min-app-versions/{role}",
            axum::routing::put(set_min_app_version),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameRequest {
    name: String,
}

async fn create_city(
    State(state): State<AppState>,
    _admin: AdminDevice,
    ApiJson(request): ApiJson<NameRequest>,
) -> Result<ApiJson<City>> {
    Ok(ApiJson(
        state
            .store
            .create_city(crate::ids::new_id(), &request.name)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountyRequest {
    city_id: Uuid,
    name: String,
}

async fn create_county(
    State(state): State<AppState>,
    _admin: AdminDevice,
    ApiJson(request): ApiJson<CountyRequest>,
) -> Result<ApiJson<County>> {
    Ok(ApiJson(
        state
            .store
            .create_county(crate::ids::new_id(), request.city_id, &request.name)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchoolRequest {
    county_id: Uuid,
    name: String,
}

async fn create_school(
    State(state): State<AppState>,
    _admin: AdminDevice,
    ApiJson(request): ApiJson<SchoolRequest>,
) -> Result<ApiJson<School>> {
    Ok(ApiJson(
        state
            .store
            .create_school(crate::ids::new_id(), request.county_id, &request.name)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VenueRequest {
    county_id: Uuid,
    name: String,
    kind: String,
}

async fn create_venue(
    State(state): State<AppState>,
    _admin: AdminDevice,
    ApiJson(request): ApiJson<VenueRequest>,
) -> Result<ApiJson<Venue>> {
    Ok(ApiJson(
        state
            .store
            .create_venue(
                crate::ids::new_id(),
                request.county_id,
                &request.name,
                &request.kind,
            )
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRequest {
    #[serde(deserialize_with = "Role::deserialize_user")]
    role: Role,
    school_id: Option<Uuid>,
    venue_id: Option<Uuid>,
    display_name: Option<String>,
    external_ref: Option<String>,
}

#[derive(Serialize)]
struct CreatedUser {
    id: Uuid,
    role: Role,
    school_id: Option<Uuid>,
    venue_id: Option<Uuid>,
}

async fn create_user(
    State(state): State<AppState>,
    _admin: AdminDevice,
    ApiJson(request): ApiJson<UserRequest>,
) -> Result<ApiJson<CreatedUser>> {
    let user = NewUser {
        id: crate::ids::new_id(),
        role: request.role,
        school_id: request.school_id,
        venue_id: request.venue_id,
        display_name: request.display_name,
        external_ref: request.external_ref,
    };
    state.store.create_user(&user, now_ms()).await?;
    let stored = state
        .store
        .user(user.id)
        .await?
        .ok_or_else(|| Error::not_found("user", user.id))?;
    Ok(ApiJson(CreatedUser {
        id: stored.id,
        role: stored.role,
        school_id: stored.school_id,
        venue_id: stored.venue_id,
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CodeRequest {
    days: Option<u32>,
}

#[derive(Serialize)]
struct CodeResponse {
    code: String,
    user_id: Uuid,
    expires_at: i64,
}

async fn enroll_code(
    State(state): State<AppState>,
    _admin: AdminDevice,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<ApiJson<CodeResponse>> {
    let user_id = path_uuid(&id, "user")?;
    // The body is optional: empty means the default lifetime.
    let request: CodeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CodeRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| Error::InvalidInput("the body must be {\"days\": N} or empty".into()))?
    };
    let issued = state
        .accounts
        .issue_enrollment_code(user_id, request.days.unwrap_or(DEFAULT_CODE_TTL_DAYS))
        .await?;
    Ok(ApiJson(CodeResponse {
        code: issued.code.expose().to_owned(),
        user_id: issued.user_id,
        expires_at: issued.expires_at,
    }))
}

/// `POST /api/admin/venues/{id}/edges`: an edge box for the venue (ADR 0150), its user
/// and one-time enrollment code (the body is optional, `{"days": N}`). Only bureau
/// administrators: an edge relays for every device of its venue's roster.
async fn create_edge(
    State(state): State<AppState>,
    _admin: AdminDevice,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<ApiJson<CodeResponse>> {
    let venue = path_uuid(&id, "venue")?;
    let request: CodeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CodeRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| Error::InvalidInput("the body must be {\"days\": N} or empty".into()))?
    };
    let user = crate::edge::create(&state.store, venue, crate::clock::now_ms()).await?;
    let issued = state
        .accounts
        .issue_enrollment_code(user, request.days.unwrap_or(DEFAULT_CODE_TTL_DAYS))
        .await?;
    Ok(ApiJson(CodeResponse {
        code: issued.code.expose().to_owned(),
        user_id: issued.user_id,
        expires_at: issued.expires_at,
    }))
}

async fn import_pupils(
    State(state): State<AppState>,
    _admin: AdminDevice,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<ApiJson<ImportReport>> {
    let school_id = SchoolId(path_uuid(&id, "school")?);
    if state.store.school(school_id.0).await?.is_none() {
        return Err(Error::not_found("school", school_id));
    }
    let (rows, errors) = parse_pupils_csv(body.as_ref())?;
    let report = state
        .accounts
        .import_pupils(school_id, rows, errors, |_| {})
        .await?;
    Ok(ApiJson(report))
}

#[derive(Serialize)]
struct PupilCount {
    school_id: Uuid,
    pupils: i64,
}

async fn pupil_count(
    State(state): State<AppState>,
    _admin: AdminDevice,
    Path(id): Path<String>,
) -> Result<ApiJson<PupilCount>> {
    let school_id = path_uuid(&id, "school")?;
    if state.store.school(school_id).await?.is_none() {
        return Err(Error::not_found("school", school_id));
    }
    Ok(ApiJson(PupilCount {
        school_id,
        pupils: state.store.anonymous_pupil_count(school_id).await?,
    }))
}

#[derive(Serialize)]
struct Erased {
    pupil_id: PupilId,
    erased: bool,
    revoked_devices: usize,
}

async fn erase_pupil(
    State(state): State<AppState>,
    _admin: AdminDevice,
    Path(id): Path<String>,
) -> Result<ApiJson<Erased>> {
    let pupil_id = PupilId(path_uuid(&id, "pupil")?);
    let erased = state.accounts.erase_pupil(pupil_id).await?;
    // Open dashboards drop the name at their next read (ADR 0199).
    state.live.people_changed();
    Ok(ApiJson(Erased {
        pupil_id,
        erased: erased.changed,
        revoked_devices: erased.revoked_devices.len(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFilter {
    user_id: Option<Uuid>,
}

#[derive(Serialize)]
struct DeviceList {
    devices: Vec<DeviceRecord>,
}

async fn list_devices(
    State(state): State<AppState>,
    _admin: AdminDevice,
    filter: std::result::Result<Query<DeviceFilter>, QueryRejection>,
) -> Result<ApiJson<DeviceList>> {
    let Query(filter) =
        filter.map_err(|_| Error::InvalidInput("the only filter is user_id=UUID".into()))?;
    Ok(ApiJson(DeviceList {
        devices: state.store.list_devices(filter.user_id).await?,
    }))
}

async fn revoke(
    State(state): State<AppState>,
    _admin: AdminDevice,
    Path(id): Path<String>,
) -> Result<ApiJson<Revoked>> {
    let device_id = DeviceId(path_uuid(&id, "device")?);
    revoke_device(&state, device_id).await
}

/// The minimum app version of each role that has one (`{"teacher": "1.4.0"}`).
#[derive(Serialize)]
struct MinAppVersions {
    minimums: std::collections::BTreeMap<&'static str, String>,
}

async fn min_app_versions(
    State(state): State<AppState>,
    _admin: AdminDevice,
) -> Result<ApiJson<MinAppVersions>> {
    Ok(ApiJson(MinAppVersions {
        minimums: state
            .store
            .min_app_versions()
            .await?
            .into_iter()
            .map(|(role, version)| (role.as_str(), version))
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MinAppVersionRequest {
    /// The minimum, or `null` to clear it.
    version: Option<String>,
}

#[derive(Serialize)]
struct MinAppVersionSet {
    role: Role,
    version: Option<String>,
}

async fn set_min_app_version(
    State(state): State<AppState>,
    _admin: AdminDevice,
    Path(role): Path<String>,
    ApiJson(request): ApiJson<MinAppVersionRequest>,
) -> Result<ApiJson<MinAppVersionSet>> {
    let role = Role::parse_user(&role).map_err(|_| {
        Error::InvalidInput(
            "role must be pupil, volunteer, teacher, venue_staff or bureau_admin".into(),
        )
    })?;
    let version =
        crate::fleet::set_minimum(&state.store, role, request.version.as_deref(), now_ms()).await?;
    Ok(ApiJson(MinAppVersionSet { role, version }))
}
