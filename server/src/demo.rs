//! `--demo`: a clearly marked sample province (every name ends in 示例, "sample"), seeded
//! idempotently with stable ids, and the enrollment codes a newcomer needs.

use std::net::SocketAddr;

use uuid::Uuid;

use crate::accounts::{Accounts, Role};
use crate::clock::now_ms;
use crate::error::Result;
use crate::ids::stable_id;
use crate::store::NewUser;

/// The marker every sample name carries.
pub const MARK: &str = "（示例）";

/// The password of every demo web login (printed; sample data only).
pub const DEMO_PASSWORD: &str = "kepu-demo-password";

/// Pupils seeded per school.
const PUPILS_PER_SCHOOL: usize = 10;

/// A demo account with a fresh enrollment code.
#[derive(Debug, Clone)]
pub struct DemoLogin {
    /// Who this is, for the printout (e.g. "bureau admin").
    pub label: String,
    /// The user's id.
    pub user_id: Uuid,
    /// The user's role.
    pub role: Role,
    /// A fresh one-time code (demo codes may be printed).
    pub code: String,
}

/// What the demo seed left in the database.
#[derive(Debug, Clone)]
pub struct DemoSeed {
    /// Fresh codes for the demo accounts.
    pub logins: Vec<DemoLogin>,
    /// Venues in the sample.
    pub venues: usize,
    /// Schools in the sample.
    pub schools: usize,
    /// Pupils in the sample.
    pub pupils: usize,
    /// Web logins (login name, who) for the dashboard and reports; password
    /// [`DEMO_PASSWORD`].
    pub web_logins: Vec<(String, String)>,
}

struct Place {
    city: &'static str,
    county: &'static str,
    schools: &'static [&'static str],
    venues: &'static [(&'static str, &'static str)],
}

const PLACES: &[Place] = &[
    Place {
        city: "长沙市",
        county: "岳麓区",
        schools: &["岳麓区博才小学"],
        venues: &[
            ("湖南省科技馆", "science_museum"),
            ("湖南大学工程训练中心", "university_lab"),
        ],
    },
    Place {
        city: "株洲市",
        county: "天元区",
        schools: &["天元区实验中学"],
        venues: &[("株洲市科技馆", "science_museum")],
    },
    Place {
        city: "湘西土家族苗族自治州",
        county: "花垣县",
        schools: &["花垣县民族小学"],
        venues: &[("湘西州研学实践基地", "study_practice_base")],
    },
];

fn marked(name: &str) -> String {
    format!("{name}{MARK}")
}

/// Seeds the sample province (a no-op for what exists) and issues fresh codes for its
/// bureau admin, venue staff, teachers, volunteer and two pupils.
///
/// # Errors
/// A database failure.
pub async fn seed(accounts: &Accounts) -> Result<DemoSeed> {
    let store = accounts.store();
    let now = now_ms();
    let mut logins: Vec<(String, Uuid, Role)> = Vec::new();
    let mut first_school = None;
    let mut first_venue = None;
    let (mut venue_count, mut school_count, mut pupil_count) = (0, 0, 0);

    for place in PLACES {
        let city = stable_id(&format!("demo/city/{}", place.city));
        store.create_city(city, &marked(place.city)).await?;
        let county = stable_id(&format!("demo/county/{}", place.county));
        store
            .create_county(county, city, &marked(place.county))
            .await?;
        for (name, kind) in place.venues {
            let venue = stable_id(&format!("demo/venue/{name}"));
            store
                .create_venue(venue, county, &marked(name), kind)
                .await?;
            first_venue.get_or_insert(venue);
            venue_count += 1;
        }
        for name in place.schools {
            let school = stable_id(&format!("demo/school/{name}"));
            store.create_school(school, county, &marked(name)).await?;
            first_school.get_or_insert(school);
            school_count += 1;
            let teacher = NewUser {
                id: stable_id(&format!("demo/teacher/{name}")),
                role: Role::Teacher,
                school_id: Some(school),
                venue_id: None,
                display_name: Some(format!("{name}科学老师{MARK}")),
                external_ref: None,
            };
            store.create_user(&teacher, now).await?;
            logins.push((
                format!("teacher, {}", marked(name)),
                teacher.id,
                Role::Teacher,
            ));
            let pupils: Vec<NewUser> = (1..=PUPILS_PER_SCHOOL)
                .map(|n| NewUser {
                    id: stable_id(&format!("demo/pupil/{name}/{n}")),
                    role: Role::Pupil,
                    school_id: Some(school),
                    venue_id: None,
                    display_name: Some(format!("示例学生{n:02}")),
                    external_ref: Some(format!("DEMO-{n:02}")),
                })
                .collect();
            store.create_users(&pupils, now).await?;
            pupil_count += pupils.len();
            if logins.iter().filter(|l| l.2 == Role::Pupil).count() < 2 {
                logins.push((
                    format!("pupil 01, {}", marked(name)),
                    pupils[0].id,
                    Role::Pupil,
                ));
            }
        }
    }

    let others = [
        NewUser {
            id: stable_id("demo/bureau-admin"),
            role: Role::BureauAdmin,
            school_id: None,
            venue_id: None,
            display_name: Some(format!("省教育厅管理员{MARK}")),
            external_ref: None,
        },
        NewUser {
            id: stable_id("demo/venue-staff"),
            role: Role::VenueStaff,
            school_id: None,
            venue_id: first_venue,
            display_name: Some(format!("科技馆工作人员{MARK}")),
            external_ref: None,
        },
        NewUser {
            id: stable_id("demo/volunteer"),
            role: Role::Volunteer,
            school_id: first_school,
            venue_id: None,
            display_name: Some(format!("小小科普辅导员{MARK}")),
            external_ref: None,
        },
    ];
    let labels = [
        "bureau admin",
        "venue staff, 湖南省科技馆（示例）",
        "junior volunteer",
    ];
    let mut staff = Vec::new();
    for (user, label) in others.iter().zip(labels) {
        store.create_user(user, now).await?;
        staff.push((label.to_owned(), user.id, user.role));
    }
    staff.extend(logins);
    let logins = staff;

    let mut web_logins = Vec::new();
    let first_teacher = logins.iter().find(|l| l.2 == Role::Teacher).map(|l| l.1);
    let web = [
        (
            "demo-admin",
            Some(stable_id("demo/bureau-admin")),
            "bureau admin: reports",
        ),
        (
            "demo-staff",
            Some(stable_id("demo/venue-staff")),
            "venue staff: live dashboard",
        ),
        (
            "demo-teacher",
            first_teacher,
            "teacher: own school's report",
        ),
    ];
    for (login, user, label) in web {
        if let Some(user) = user {
            accounts.set_web_login(user, login, DEMO_PASSWORD).await?;
            web_logins.push((login.to_owned(), label.to_owned()));
        }
    }

    let mut issued = Vec::with_capacity(logins.len());
    for (label, user_id, role) in logins {
        // An erased demo pupil can no longer enroll; leave them out.
        let Ok(code) = accounts.issue_enrollment_code(user_id, 7).await else {
            continue;
        };
        issued.push(DemoLogin {
            label,
            user_id,
            role,
            code: code.code.expose().to_owned(),
        });
    }
    Ok(DemoSeed {
        logins: issued,
        venues: venue_count,
        schools: school_count,
        pupils: pupil_count,
        web_logins,
    })
}

/// Prints what a newcomer needs: the URLs and the demo enrollment codes.
pub fn print_welcome(seed: &DemoSeed, address: SocketAddr) {
    let base = format!("http://{address}");
    println!();
    println!("=== kepu DEMO DATA (示例数据) — a sample province, not real people ===");
    println!(
        "seeded {} venues, {} schools, {} pupils (pseudonymous ids)",
        seed.venues, seed.schools, seed.pupils
    );
    println!("  health:    {base}/healthz   ready: {base}/readyz");
    println!("  metrics:   {base}/metrics");
    println!("  venues:    {base}/api/venues");
    println!("  enroll:    curl -X POST {base}/api/enroll -H 'content-type: application/json' \\");
    println!("               -d '{{\"code\": \"<CODE>\"}}'");
    println!("  sign in:   {base}/login   (password {DEMO_PASSWORD})");
    for (login, label) in &seed.web_logins {
        println!("    {login:<14} {label}");
    }
    println!("one-time enrollment codes (valid 7 days; new ones on every --demo start):");
    for login in &seed.logins {
        println!(
            "  {:<12} {:<40} user {}",
            login.code, login.label, login.user_id
        );
    }
    println!("=====================================================================");
    println!();
}
