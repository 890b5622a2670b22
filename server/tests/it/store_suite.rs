//! The store conformance suite: every case runs against SQLite and PostgreSQL.

use kepu_server::Store;
use kepu_server::accounts::{Accounts, AuthError, Role, parse_pupils_csv};
use kepu_server::clock::{DAY_MS, now_ms};
use kepu_server::error::Error;
use kepu_server::ids::new_id;
use kepu_server::store::{NewUser, Refusal};
use kepu_sync_core::engine::{StorageTask, StoredChange};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId};
use kepu_sync_core::mem_store::{append, plain_changes};
use sqlx::{Column, Row};

use crate::support::{TestDb, place, user};

crate::support::on_both_databases!(
    db:
    reopening_keeps_the_server_seed,
    configured_seed_must_match_the_stored_one,
    enrollment_code_works_once,
    expired_enrollment_code_is_refused,
    identity_carries_role_school_venue_and_pupil_id,
    revoked_device_is_refused_and_announced,
    rotation_kills_the_old_token,
    erasure_removes_the_name_everywhere_and_keeps_counts,
    erasing_twice_changes_nothing,
    roles_need_their_affiliation,
    duplicate_school_name_in_a_county_is_a_conflict,
    refusals_are_recorded_and_pending,
    pupil_import_keeps_good_rows,
    devices_list_by_user_with_last_sync,
    last_sync_times_are_written_many_at_a_time,
    venues_are_listed_by_name,
    admin_cli_bootstraps_an_admin_and_imports_pupils,
    one_failing_storage_task_fails_only_itself,
    a_bookings_roster_is_written_with_its_records_and_rebuilt,
    a_database_from_before_rosters_gets_them_at_start,
    a_bookings_attendance_is_read_from_one_snapshot,
    login_attempts_lock_a_name_for_every_node_and_are_forgotten,
    a_snapshot_replaced_by_another_node_is_not_overwritten,
    changes_under_an_actor_id_claimed_by_another_device_are_not_stored,
    a_compaction_of_hundreds_of_changes_deletes_their_rows_only,
    a_connect_reads_the_minimum_version_and_edge_venue_with_the_identity,
    peers_sync_states_are_saved_together_the_last_of_each_winning,
    devices_gone_from_this_node_leave_its_presence_together,
    a_booking_asks_for_its_slot_decision_only_when_what_it_is_decided_on_changes,
    bookings_written_together_are_written_as_each_alone,
    a_watched_venues_dashboard_takes_a_bookings_rows_from_its_records_write,
);

/// Node A claimed an actor id for device X; node B, which never heard of it, admitted a
/// change under it from device Y. B's append is refused and stores nothing, tells whose
/// the actor id is, and fails alone: an honest append batched with it is stored. X's own
/// append under it is stored.
async fn changes_under_an_actor_id_claimed_by_another_device_are_not_stored(db: &TestDb) {
    use automerge::transaction::Transactable as _;
    let x = DeviceId(uuid::Uuid::from_u128(0x0a));
    let y = DeviceId(uuid::Uuid::from_u128(0x0b));
    let actor = automerge::ActorId::from([7u8; 16]);
    let claim = StorageTask::ClaimActors {
        device: x,
        actors: vec![actor.to_bytes().to_vec()],
    };
    db.store
        .run_document_tasks(&[&claim], now_ms())
        .await
        .unwrap();
    let append_as = |doc: [u8; 16], actor: &automerge::ActorId, owner: DeviceId| {
        let mut d = automerge::Automerge::new().with_actor(actor.clone());
        let mut tx = d.transaction();
        tx.put(automerge::ROOT, "k", 1).unwrap();
        tx.commit();
        let c = d.get_last_local_change().unwrap();
        StorageTask::Append {
            doc: kepu_sync_core::doc_id::DocumentId::from_bytes(doc),
            kind: None,
            changes: vec![StoredChange {
                hash: c.hash(),
                bytes: c.raw_bytes().to_vec(),
            }],
            heads: d.get_heads(),
            owners: vec![(actor.to_bytes().to_vec(), owner)],
        }
    };
    let forged = append_as([1; 16], &actor, y);
    let honest_actor = automerge::ActorId::from([8u8; 16]);
    let honest = append_as([2; 16], &honest_actor, y);
    let results = db
        .store
        .run_document_tasks_isolated(&[&forged, &honest], now_ms())
        .await;
    match &results[0] {
        Err(Error::ActorClaimed(owners)) => {
            assert_eq!(owners, &vec![(actor.to_bytes().to_vec(), x)], "X owns it");
        }
        other => panic!("the forged append was not refused: {other:?}"),
    }
    assert!(results[1].is_ok(), "the honest append is stored");
    let rows = |doc: [u8; 16]| {
        let store = db.store.clone();
        async move {
            store
                .load_document(kepu_sync_core::doc_id::DocumentId::from_bytes(doc))
                .await
                .unwrap()
                .changes
                .len()
        }
    };
    assert_eq!(rows([1; 16]).await, 0, "nothing stored under X's actor id");
    assert_eq!(rows([2; 16]).await, 1);
    let claims = db.store.actor_claims().await.unwrap();
    assert!(
        claims.contains(&(actor.to_bytes().to_vec(), x)),
        "the first claim stays"
    );
    assert!(
        claims.contains(&(honest_actor.to_bytes().to_vec(), y)),
        "an append claims its new actor id"
    );
    // X itself stores under its actor id.
    let own = append_as([1; 16], &actor, x);
    db.store
        .run_document_tasks(&[&own], now_ms())
        .await
        .unwrap();
    assert_eq!(rows([1; 16]).await, 1);

    // This store now answers from the claims it saw committed (ADR 0188); another
    // process on the same database remembers none and asks the table: the same answer.
    let other = Store::open(&db.url, None).await.unwrap();
    for store in [&db.store, &other] {
        let forged = append_as([3; 16], &actor, y);
        let results = store
            .run_document_tasks_isolated(&[&forged], now_ms())
            .await;
        assert!(
            matches!(&results[0], Err(Error::ActorClaimed(o)) if *o == vec![(actor.to_bytes().to_vec(), x)]),
            "{:?}",
            results[0]
        );
    }
    other.close().await;
    assert_eq!(rows([3; 16]).await, 0, "nothing stored under X's actor id");
}

async fn reopening_keeps_the_server_seed(db: &TestDb) {
    let again = Store::open(&db.url, None).await.unwrap();
    assert_eq!(again.server_seed(), db.store.server_seed());
    assert_ne!(db.store.server_seed(), &[0u8; 32]);
    again.close().await;
}

async fn configured_seed_must_match_the_stored_one(db: &TestDb) {
    let stored = *db.store.server_seed();
    let same = Store::open(&db.url, Some(stored)).await.unwrap();
    same.close().await;
    let mut other = stored;
    other[0] ^= 1;
    assert!(matches!(
        Store::open(&db.url, Some(other)).await,
        Err(Error::Config(_))
    ));
}

async fn enrollment_code_works_once(db: &TestDb) {
    let accounts = Accounts::new(db.store.clone());
    let p = place(&db.store).await;
    let teacher = user(
        &db.store,
        Role::Teacher,
        Some(p.school),
        None,
        Some("王老师"),
    )
    .await;
    let code = accounts.issue_enrollment_code(teacher, 7).await.unwrap();
    let first = accounts
        .enroll(code.code.expose(), Some("1.0"))
        .await
        .unwrap();
    assert_eq!(first.user_id.0, teacher);
    assert_eq!(first.role, Role::Teacher);
    assert!(matches!(
        accounts.enroll(code.code.expose(), None).await,
        Err(Error::EnrollmentCodeRejected)
    ));
    assert!(matches!(
        accounts.enroll("0000000000", None).await,
        Err(Error::EnrollmentCodeRejected)
    ));
    let devices = db.store.list_devices(Some(teacher)).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].app_version.as_deref(), Some("1.0"));
}

async fn expired_enrollment_code_is_refused(db: &TestDb) {
    let accounts = Accounts::new(db.store.clone());
    let admin = user(&db.store, Role::BureauAdmin, None, None, None).await;
    let code = kepu_server::accounts::EnrollmentCode::generate();
    let now = now_ms();
    db.store
        .insert_enrollment_code(&code.hash(), admin, now - 8 * DAY_MS, now - DAY_MS)
        .await
        .unwrap();
    assert!(matches!(
        accounts.enroll(code.expose(), None).await,
        Err(Error::EnrollmentCodeRejected)
    ));
    assert_eq!(
        db.store.purge_expired_enrollment_codes(now).await.unwrap(),
        1
    );
}

async fn identity_carries_role_school_venue_and_pupil_id(db: &TestDb) {
    let accounts = Accounts::new(db.store.clone());
    let p = place(&db.store).await;
    let pupil = user(&db.store, Role::Pupil, Some(p.school), None, Some("张小明")).await;
    let staff = user(&db.store, Role::VenueStaff, None, Some(p.venue), None).await;
    let code = accounts.issue_enrollment_code(pupil, 7).await.unwrap();
    let enrolled = accounts.enroll(code.code.expose(), None).await.unwrap();
    assert_eq!(enrolled.pupil_id, Some(PupilId(pupil)));
    let identity = accounts
        .authenticator()
        .authenticate(&enrolled.token)
        .await
        .unwrap();
    assert_eq!(identity.writer.role, Role::Pupil);
    assert_eq!(identity.writer.school, Some(SchoolId(p.school)));
    assert_eq!(identity.writer.pupil, Some(PupilId(pupil)));
    assert_eq!(identity.writer.device, enrolled.device_id);

    let code = accounts.issue_enrollment_code(staff, 7).await.unwrap();
    let enrolled = accounts.enroll(code.code.expose(), None).await.unwrap();
    let identity = accounts
        .authenticator()
        .authenticate(&enrolled.token)
        .await
        .unwrap();
    assert_eq!(identity.writer.venue.map(|v| v.0), Some(p.venue));
    assert_eq!(identity.writer.pupil, None);
    assert!(matches!(
        accounts.authenticator().authenticate("garbage").await,
        Err(AuthError::Invalid)
    ));
    let unknown = kepu_server::accounts::DeviceToken::generate();
    assert!(matches!(
        accounts
            .authenticator()
            .authenticate(unknown.expose())
            .await,
        Err(AuthError::Invalid)
    ));
}

/// What admitting a sync connection checks (the device's last reported app version, its
/// role's minimum, an edge box's venue) comes with the identity, from one read, and a
/// minimum set or cleared is seen by the next connect (ADR 0187).
async fn a_connect_reads_the_minimum_version_and_edge_venue_with_the_identity(db: &TestDb) {
    let accounts = Accounts::new(db.store.clone());
    let p = place(&db.store).await;
    let pupil = user(&db.store, Role::Pupil, Some(p.school), None, None).await;
    let edge = user(&db.store, Role::VenueStaff, None, Some(p.venue), None).await;
    db.store
        .mark_edge_user(edge, p.venue, now_ms())
        .await
        .unwrap();
    let enroll = |who, version: Option<&'static str>| {
        let accounts = accounts.clone();
        async move {
            let code = accounts.issue_enrollment_code(who, 7).await.unwrap();
            accounts.enroll(code.code.expose(), version).await.unwrap()
        }
    };
    let pupil_device = enroll(pupil, Some("1.4.0")).await;
    let edge_device = enroll(edge, None).await;
    let auth = accounts.authenticator();

    let (identity, facts) = auth.authenticate_connect(&edge_device.token).await.unwrap();
    assert_eq!(identity.writer.device, edge_device.device_id);
    assert_eq!(facts.edge_venue, Some(p.venue));
    assert_eq!(facts.min_app_version, None);
    assert_eq!(facts.app_version, None);

    db.store
        .set_min_app_version(Role::Pupil, Some("2.0.0"), now_ms())
        .await
        .unwrap();
    let (identity, facts) = auth
        .authenticate_connect(&pupil_device.token)
        .await
        .unwrap();
    assert_eq!(identity.writer.pupil, Some(PupilId(pupil)));
    assert_eq!(facts.app_version.as_deref(), Some("1.4.0"));
    assert_eq!(facts.min_app_version.as_deref(), Some("2.0.0"));
    assert_eq!(facts.edge_venue, None);
    // Another role's minimum is not this device's.
    let (_, facts) = auth.authenticate_connect(&edge_device.token).await.unwrap();
    assert_eq!(facts.min_app_version, None);

    db.store
        .set_min_app_version(Role::Pupil, None, now_ms())
        .await
        .unwrap();
    let (_, facts) = auth
        .authenticate_connect(&pupil_device.token)
        .await
        .unwrap();
    assert_eq!(facts.min_app_version, None);
}

/// Sync states queued in one batch are written together: of two for the same document
/// and peer the later one is kept, and the others beside it are all stored (ADR 0187).
async fn peers_sync_states_are_saved_together_the_last_of_each_winning(db: &TestDb) {
    use kepu_sync_core::doc_id::DocumentId;
    let docs: Vec<DocumentId> = (0..3u8)
        .map(|i| DocumentId::from_bytes([i + 40; 16]))
        .collect();
    let save = |doc, peer: &str, state: &[u8]| StorageTask::SaveSyncState {
        doc,
        peer: peer.to_owned(),
        state: state.to_vec(),
    };
    let mut tasks = vec![
        save(docs[0], "phone-a", b"first"),
        save(docs[1], "phone-a", b"other doc"),
        save(docs[0], "phone-b", b"other peer"),
    ];
    // Enough to need more than one statement.
    for i in 0..450 {
        tasks.push(save(docs[2], &format!("peer-{i}"), &[1, 2, 3]));
    }
    tasks.push(save(docs[0], "phone-a", b"second"));
    let refs: Vec<&StorageTask> = tasks.iter().collect();
    db.store.run_document_tasks(&refs, now_ms()).await.unwrap();

    let state = |doc: DocumentId, peer: &'static str| {
        let pool = db.store.pool().clone();
        async move {
            sqlx::query("SELECT state FROM sync_states WHERE doc_id = $1 AND peer_storage_id = $2")
                .bind(doc.to_string())
                .bind(peer)
                .fetch_one(&pool)
                .await
                .unwrap()
                .get::<Vec<u8>, _>("state")
        }
    };
    assert_eq!(state(docs[0], "phone-a").await, b"second");
    assert_eq!(state(docs[1], "phone-a").await, b"other doc");
    assert_eq!(state(docs[0], "phone-b").await, b"other peer");
    let stored: i64 = sqlx::query("SELECT COUNT(*) AS n FROM sync_states WHERE doc_id = $1")
        .bind(docs[2].to_string())
        .fetch_one(db.store.pool())
        .await
        .unwrap()
        .get("n");
    assert_eq!(stored, 450);

    // A later batch replaces a stored state.
    let again = save(docs[1], "phone-a", b"newer");
    db.store
        .run_document_tasks(&[&again], now_ms())
        .await
        .unwrap();
    assert_eq!(state(docs[1], "phone-a").await, b"newer");
}

/// Devices whose connections to this node all left are taken out of its presence in one
/// go (200 a statement): the others stay, and another node's row of the same device is
/// that node's to remove.
async fn devices_gone_from_this_node_leave_its_presence_together(db: &TestDb) {
    let devices: Vec<uuid::Uuid> = (0..450).map(|_| new_id()).collect();
    let now = now_ms();
    db.store.presence_refresh(&devices, now).await.unwrap();
    sqlx::query(
        "INSERT INTO device_presence (node, device_id, seen_at) VALUES ('another node', $1, $2)",
    )
    .bind(devices[0].to_string())
    .bind(now)
    .execute(db.store.pool())
    .await
    .unwrap();
    let elsewhere = db.store.present_elsewhere(&devices, now - 1).await.unwrap();
    assert_eq!(elsewhere.into_iter().collect::<Vec<_>>(), vec![devices[0]]);

    db.store.presence_gone(&devices[..300]).await.unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query("SELECT node, device_id FROM device_presence ORDER BY device_id")
            .fetch_all(db.store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("node"), r.get("device_id")))
            .collect();
    assert_eq!(rows.len(), 151, "150 still here and the other node's one");
    assert!(rows.contains(&("another node".to_owned(), devices[0].to_string())));
    let here: std::collections::HashSet<String> = rows
        .iter()
        .filter(|(node, _)| node != "another node")
        .map(|(_, d)| d.clone())
        .collect();
    let expected: std::collections::HashSet<String> =
        devices[300..].iter().map(ToString::to_string).collect();
    assert_eq!(here, expected);
}

async fn revoked_device_is_refused_and_announced(db: &TestDb) {
    let accounts = Accounts::new(db.store.clone());
    let admin = user(&db.store, Role::BureauAdmin, None, None, None).await;
    let code = accounts.issue_enrollment_code(admin, 7).await.unwrap();
    let enrolled = accounts.enroll(code.code.expose(), None).await.unwrap();
    let mut revocations = accounts.authenticator().subscribe_revocations();
    assert!(
        accounts
            .authenticator()
            .revoke(enrolled.device_id)
            .await
            .unwrap()
    );
    assert_eq!(revocations.recv().await.unwrap(), enrolled.device_id);
    assert!(matches!(
        accounts.authenticator().authenticate(&enrolled.token).await,
        Err(AuthError::Revoked)
    ));
    assert!(
        !accounts
            .authenticator()
            .revoke(enrolled.device_id)
            .await
            .unwrap()
    );
}

async fn rotation_kills_the_old_token(db: &TestDb) {
    let accounts = Accounts::new(db.store.clone());
    let admin = user(&db.store, Role::BureauAdmin, None, None, None).await;
    let code = accounts.issue_enrollment_code(admin, 7).await.unwrap();
    let enrolled = accounts.enroll(code.code.expose(), None).await.unwrap();
    let auth = accounts.authenticator();
    let identity = auth.authenticate(&enrolled.token).await.unwrap();
    let new_token = accounts
        .rotate_token(&identity, enrolled.device_id)
        .await
        .unwrap();
    assert!(matches!(
        auth.authenticate(&enrolled.token).await,
        Err(AuthError::Invalid)
    ));
    assert_eq!(
        auth.authenticate(new_token.expose())
            .await
            .unwrap()
            .writer
            .device,
        enrolled.device_id
    );
    let other = DeviceId(new_id());
    assert!(matches!(
        accounts.rotate_token(&identity, other).await,
        Err(Error::Forbidden(_))
    ));
}

/// Every text and blob value in every table, for "the name is gone everywhere".
async fn database_contains(store: &Store, needle: &str) -> Vec<String> {
    let tables = [
        "cities",
        "counties",
        "schools",
        "venues",
        "users",
        "school_erased_pupils",
        "pass_revocations",
        "devices",
        "enrollment_codes",
        "refusals",
        "server_keys",
        "documents",
        "changes",
        "sync_states",
    ];
    let mut found = Vec::new();
    for table in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(store.pool())
            .await
            .unwrap();
        for row in &rows {
            for (i, column) in row.columns().iter().enumerate() {
                let text = row.try_get::<Option<String>, _>(i).ok().flatten();
                let bytes = row.try_get::<Option<Vec<u8>>, _>(i).ok().flatten();
                let hit = text.is_some_and(|t| t.contains(needle))
                    || bytes
                        .is_some_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()));
                if hit {
                    found.push(format!("{table}.{}", column.name()));
                }
            }
        }
    }
    found
}

async fn erasure_removes_the_name_everywhere_and_keeps_counts(db: &TestDb) {
    let accounts = Accounts::new(db.store.clone());
    let p = place(&db.store).await;
    let name = "李小红";
    let pupil = db_pupil(&db.store, p.school, name, Some("XH-0042")).await;
    let _other = db_pupil(&db.store, p.school, "王芳", None).await;
    let code = accounts.issue_enrollment_code(pupil, 7).await.unwrap();
    let enrolled = accounts.enroll(code.code.expose(), None).await.unwrap();
    let _unused_code = accounts.issue_enrollment_code(pupil, 7).await.unwrap();
    let before = db.store.anonymous_pupil_count(p.school).await.unwrap();
    assert_eq!(before, 2);
    assert_eq!(
        database_contains(&db.store, name).await,
        vec!["users.display_name"]
    );

    let mut revocations = accounts.authenticator().subscribe_revocations();
    let erased = accounts.erase_pupil(PupilId(pupil)).await.unwrap();
    assert!(erased.changed);
    assert_eq!(erased.revoked_pass_serial, Some(1));
    assert_eq!(erased.revoked_devices, vec![enrolled.device_id.0]);
    assert_eq!(revocations.recv().await.unwrap(), enrolled.device_id);

    assert!(database_contains(&db.store, name).await.is_empty());
    assert!(database_contains(&db.store, "XH-0042").await.is_empty());
    let stored = db.store.user(pupil).await.unwrap().unwrap();
    assert_eq!(stored.display_name, None);
    assert_eq!(stored.school_id, None);
    assert_eq!(stored.pupil_pass_serial, None);
    assert!(stored.erased_at.is_some());
    assert_eq!(
        db.store.anonymous_pupil_count(p.school).await.unwrap(),
        before
    );
    assert_eq!(db.store.pass_revocations().await.unwrap(), vec![(pupil, 1)]);
    assert!(matches!(
        accounts.authenticator().authenticate(&enrolled.token).await,
        Err(AuthError::Revoked)
    ));
    assert_eq!(
        db.store
            .open_enrollment_codes(pupil, now_ms())
            .await
            .unwrap(),
        0
    );
    assert!(accounts.issue_enrollment_code(pupil, 7).await.is_err());
}

async fn db_pupil(
    store: &Store,
    school: uuid::Uuid,
    name: &str,
    external_ref: Option<&str>,
) -> uuid::Uuid {
    let pupil = NewUser {
        id: new_id(),
        role: Role::Pupil,
        school_id: Some(school),
        venue_id: None,
        display_name: Some(name.to_owned()),
        external_ref: external_ref.map(str::to_owned),
    };
    store.create_user(&pupil, now_ms()).await.unwrap();
    pupil.id
}

async fn erasing_twice_changes_nothing(db: &TestDb) {
    let accounts = Accounts::new(db.store.clone());
    let p = place(&db.store).await;
    let pupil = db_pupil(&db.store, p.school, "赵六", None).await;
    accounts.erase_pupil(PupilId(pupil)).await.unwrap();
    let again = accounts.erase_pupil(PupilId(pupil)).await.unwrap();
    assert!(!again.changed);
    assert_eq!(db.store.anonymous_pupil_count(p.school).await.unwrap(), 1);
    let teacher = user(&db.store, Role::Teacher, Some(p.school), None, None).await;
    assert!(matches!(
        accounts.erase_pupil(PupilId(teacher)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        accounts.erase_pupil(PupilId(new_id())).await,
        Err(Error::NotFound { .. })
    ));
}

async fn roles_need_their_affiliation(db: &TestDb) {
    let p = place(&db.store).await;
    let mut teacher = NewUser {
        id: new_id(),
        role: Role::Teacher,
        school_id: None,
        venue_id: None,
        display_name: None,
        external_ref: None,
    };
    assert!(matches!(
        db.store.create_user(&teacher, now_ms()).await,
        Err(Error::InvalidInput(_))
    ));
    teacher.school_id = Some(new_id());
    assert!(matches!(
        db.store.create_user(&teacher, now_ms()).await,
        Err(Error::NotFound { kind: "school", .. })
    ));
    teacher.school_id = Some(p.school);
    db.store.create_user(&teacher, now_ms()).await.unwrap();
    let staff = NewUser {
        id: new_id(),
        role: Role::VenueStaff,
        school_id: None,
        venue_id: None,
        display_name: None,
        external_ref: None,
    };
    assert!(matches!(
        db.store.create_user(&staff, now_ms()).await,
        Err(Error::InvalidInput(_))
    ));
}

async fn duplicate_school_name_in_a_county_is_a_conflict(db: &TestDb) {
    let p = place(&db.store).await;
    assert!(matches!(
        db.store.create_school(new_id(), p.county, "博才小学").await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        db.store.create_school(new_id(), new_id(), "x").await,
        Err(Error::NotFound { kind: "county", .. })
    ));
    assert!(matches!(
        db.store.create_school(new_id(), p.county, "  ").await,
        Err(Error::InvalidInput(_))
    ));
}

async fn refusals_are_recorded_and_pending(db: &TestDb) {
    let accounts = Accounts::new(db.store.clone());
    let admin = user(&db.store, Role::BureauAdmin, None, None, None).await;
    let code = accounts.issue_enrollment_code(admin, 7).await.unwrap();
    let enrolled = accounts.enroll(code.code.expose(), None).await.unwrap();
    let refusal = Refusal {
        id: new_id(),
        device_id: enrolled.device_id.0,
        doc_id: "4NMNnkMhL8jXrdJ9jamS58PAVdXu".into(),
        code: "forbidden_write".into(),
        detail: "a pupil may only write their own check-in".into(),
        at: now_ms(),
    };
    db.store.record_refusal(&refusal).await.unwrap();
    assert_eq!(
        db.store
            .refusals_of_device(enrolled.device_id.0)
            .await
            .unwrap(),
        vec![refusal]
    );
    let device = db
        .store
        .device(enrolled.device_id.0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(device.pending_refusals, 1);
}

async fn pupil_import_keeps_good_rows(db: &TestDb) {
    let accounts = Accounts::new(db.store.clone());
    let p = place(&db.store).await;
    let csv = "display_name,external_ref\n张三,1\n,2\n李四,3\n王五,1\n";
    let (rows, errors) = parse_pupils_csv(csv.as_bytes()).unwrap();
    let mut progress = Vec::new();
    let report = accounts
        .import_pupils(SchoolId(p.school), rows, errors, |n| progress.push(n))
        .await
        .unwrap();
    assert_eq!(report.imported, 2);
    assert_eq!(
        report.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        vec![3, 5]
    );
    assert_eq!(progress, vec![2]);
    assert_eq!(db.store.anonymous_pupil_count(p.school).await.unwrap(), 2);
    let first = db
        .store
        .user(report.pupils[0].pupil_id.0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.display_name.as_deref(), Some("张三"));
    assert_eq!(first.pupil_pass_serial, Some(1));
    assert!(matches!(
        accounts
            .import_pupils(SchoolId(new_id()), Vec::new(), Vec::new(), |_| {})
            .await,
        Err(Error::NotFound { .. })
    ));
}

async fn devices_list_by_user_with_last_sync(db: &TestDb) {
    let accounts = Accounts::new(db.store.clone());
    let a = user(&db.store, Role::BureauAdmin, None, None, None).await;
    let b = user(&db.store, Role::BureauAdmin, None, None, None).await;
    for u in [a, a, b] {
        let code = accounts.issue_enrollment_code(u, 7).await.unwrap();
        accounts.enroll(code.code.expose(), None).await.unwrap();
    }
    assert_eq!(db.store.list_devices(None).await.unwrap().len(), 3);
    let of_a = db.store.list_devices(Some(a)).await.unwrap();
    assert_eq!(of_a.len(), 2);
    db.store
        .touch_device_sync(of_a[0].id, 1234, Some("2.0"))
        .await
        .unwrap();
    let device = db.store.device(of_a[0].id).await.unwrap().unwrap();
    assert_eq!(device.last_sync_at, Some(1234));
    assert_eq!(device.app_version.as_deref(), Some("2.0"));
}

/// The hub writes the last sync times of the devices that connected or left lately in one
/// go (ADR 0186): each device gets its latest time, more than one statement's worth of
/// devices are all written, an unknown device changes nothing and an app version stays.
async fn last_sync_times_are_written_many_at_a_time(db: &TestDb) {
    const DEVICES: usize = 230;
    let (admin, devices) = crate::support::admin_with_devices(&db.store, DEVICES).await;
    assert_eq!(devices.len(), DEVICES);
    db.store
        .touch_device_sync(devices[0], 50, Some("2.1"))
        .await
        .unwrap();
    // All but the last device, the first three twice (a connect and a disconnect), and a
    // device that does not exist.
    let mut touches: Vec<(uuid::Uuid, i64)> = devices[..DEVICES - 1]
        .iter()
        .enumerate()
        .map(|(i, d)| (*d, 1_000 + i64::try_from(i).unwrap()))
        .collect();
    touches.extend(devices[..3].iter().map(|d| (*d, 5_000)));
    touches.push((devices[1], 4_000));
    touches.push((new_id(), 7_000));
    db.store.touch_devices_synced(&touches).await.unwrap();
    let times: std::collections::HashMap<uuid::Uuid, Option<i64>> = db
        .store
        .list_devices(Some(admin))
        .await
        .unwrap()
        .iter()
        .map(|d| (d.id, d.last_sync_at))
        .collect();
    for (i, d) in devices.iter().enumerate() {
        let want = match i {
            0..3 => Some(5_000),
            i if i == DEVICES - 1 => None,
            i => Some(1_000 + i64::try_from(i).unwrap()),
        };
        assert_eq!(times[d], want, "device {i}");
    }
    let first = db.store.device(devices[0]).await.unwrap().unwrap();
    assert_eq!(first.app_version.as_deref(), Some("2.1"));
    assert_eq!(db.store.list_devices(None).await.unwrap().len(), DEVICES);
    db.store.touch_devices_synced(&[]).await.unwrap();
}

async fn venues_are_listed_by_name(db: &TestDb) {
    let p = place(&db.store).await;
    db.store
        .create_venue(new_id(), p.county, "长沙市青少年宫", "education_base")
        .await
        .unwrap();
    let venues = db.store.list_venues().await.unwrap();
    assert_eq!(venues.len(), 2);
    assert!(
        venues
            .iter()
            .any(|v| v.id == p.venue && v.kind == "science_museum")
    );
    assert!(matches!(
        db.store
            .create_venue(new_id(), p.county, "x", "Bad Kind!")
            .await,
        Err(Error::InvalidInput(_))
    ));
}

async fn admin_cli_bootstraps_an_admin_and_imports_pupils(db: &TestDb) {
    use kepu_server::admin_cli::execute_with;
    use kepu_server::config::AdminCommand;

    let accounts = Accounts::new(db.store.clone());
    let mut out = Vec::new();
    execute_with(
        &accounts,
        AdminCommand::CreateUser {
            role: "bureau-admin".into(),
            school: None,
            venue: None,
            display_name: None,
        },
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    let code = text
        .lines()
        .find_map(|l| l.strip_prefix("enrollment code "))
        .expect("the code is printed");
    let enrolled = accounts.enroll(code, None).await.unwrap();
    assert_eq!(enrolled.role, Role::BureauAdmin);

    let p = place(&db.store).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pupils.csv");
    std::fs::write(&file, "display_name,external_ref\n甲,1\n\n乙,2\n,3\n").unwrap();
    let mut out = Vec::new();
    execute_with(
        &accounts,
        AdminCommand::ImportPupils {
            school: p.school.to_string(),
            file,
        },
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("imported 2 pupils\n"), "{text}");
    assert!(text.contains("line 5: display_name is empty"), "{text}");
    assert!(!text.contains('甲'), "no names in the output");
    assert_eq!(db.store.anonymous_pupil_count(p.school).await.unwrap(), 2);
}

/// One change in a fresh document, as an engine `Append` would carry it.
fn one_change_append(n: u8) -> (kepu_sync_core::doc_id::DocumentId, StorageTask) {
    let doc = kepu_sync_core::doc_id::DocumentId::from_bytes([n; 16]);
    let (d, changes) = plain_changes(1);
    (doc, append(doc, changes, d.get_heads()))
}

async fn one_failing_storage_task_fails_only_itself(db: &TestDb) {
    let (bad, bad_task) = one_change_append(1);
    let (good, good_task) = one_change_append(2);
    // The database refuses every row of one document (a full disk for that row, a
    // constraint): a real failure inside the batch's transaction.
    let id = bad.to_string();
    match db.store.backend() {
        kepu_server::store::Backend::Sqlite => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TRIGGER refuse_one BEFORE INSERT ON changes WHEN NEW.doc_id = '{id}' \
                 BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
            )))
            .execute(db.store.pool())
            .await
            .unwrap();
        }
        kepu_server::store::Backend::Postgres => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE FUNCTION refuse_one() RETURNS trigger AS $$ BEGIN \
                 IF NEW.doc_id = '{id}' THEN RAISE EXCEPTION 'refused for the test'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql"
            )))
            .execute(db.store.pool())
            .await
            .unwrap();
            sqlx::query(
                "CREATE TRIGGER refuse_one BEFORE INSERT ON changes \
                 FOR EACH ROW EXECUTE FUNCTION refuse_one()",
            )
            .execute(db.store.pool())
            .await
            .unwrap();
        }
    }
    let results = db
        .store
        .run_document_tasks_isolated(&[&bad_task, &good_task], now_ms())
        .await;
    assert!(results[0].is_err(), "the refused document fails");
    assert!(
        results[1].is_ok(),
        "the unrelated document batched with it is stored: {:?}",
        results[1]
    );
    assert_eq!(db.store.load_document(good).await.unwrap().changes.len(), 1);
    assert!(
        db.store
            .load_document(bad)
            .await
            .unwrap()
            .changes
            .is_empty()
    );
}

/// Stores a booking's new changes as the engine's `Append` would.
async fn store_booking_changes(
    store: &Store,
    doc: kepu_sync_core::doc_id::DocumentId,
    d: &automerge::Automerge,
    since: &[automerge::ChangeHash],
) {
    let task = StorageTask::Append {
        doc,
        kind: Some(kepu_sync_core::schema::DocKind::Booking),
        changes: d
            .get_changes(since)
            .into_iter()
            .map(|c| StoredChange {
                hash: c.hash(),
                bytes: c.raw_bytes().to_vec(),
            })
            .collect(),
        heads: d.get_heads(),
        owners: Vec::new(),
    };
    let results = store.run_document_tasks_isolated(&[&task], now_ms()).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
}

async fn a_bookings_roster_is_written_with_its_records_and_rebuilt(db: &TestDb) {
    use kepu_sync_core::edits::{Edit, apply_unchecked};
    use uuid::Uuid;

    let store = &db.store;
    let teacher = teacher_of_school_3();
    let pupils: Vec<PupilId> = [30u128, 10, 20]
        .into_iter()
        .map(|n| PupilId(Uuid::from_u128(n)))
        .collect();
    let doc = kepu_sync_core::doc_id::DocumentId::from_bytes([7; 16]);
    let mut d = booking_of_school_3(&teacher, 3, pupils.clone());
    store_booking_changes(store, doc, &d, &[]).await;
    let projection = kepu_server::records::project(doc, &d);
    kepu_server::records::write(store, doc, &projection, None, now_ms())
        .await
        .unwrap();
    let id = doc.to_string();
    let ids = |ns: &[u128]| ns.iter().map(|n| Uuid::from_u128(*n)).collect::<Vec<_>>();
    assert_eq!(
        store.booking_roster(&id).await.unwrap(),
        ids(&[10, 20, 30]),
        "the roster is written with the booking's other records"
    );

    // The teacher takes a pupil off the trip: the roster is replaced, not added to.
    let before = d.get_heads();
    apply_unchecked(
        &mut d,
        &teacher,
        now_ms(),
        &Edit::RemoveFromRoster { pupil: pupils[2] },
    )
    .unwrap();
    store_booking_changes(store, doc, &d, &before).await;
    let projection = kepu_server::records::project(doc, &d);
    kepu_server::records::write(store, doc, &projection, None, now_ms())
        .await
        .unwrap();
    assert_eq!(store.booking_roster(&id).await.unwrap(), ids(&[10, 30]));

    // A database whose roster rows are gone (written before the table existed) gets them
    // back from the stored document by the rebuild.
    sqlx::query("DELETE FROM proj_rosters")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(store.booking_roster(&id).await.unwrap().is_empty());
    assert_eq!(kepu_server::records::rebuild(store).await.unwrap(), 1);
    assert_eq!(store.booking_roster(&id).await.unwrap(), ids(&[10, 30]));
    let other = kepu_sync_core::doc_id::DocumentId::from_bytes([8; 16]).to_string();
    assert!(
        store.booking_roster(&other).await.unwrap().is_empty(),
        "an unknown booking has nobody on its roster"
    );
}

async fn a_database_from_before_rosters_gets_them_at_start(db: &TestDb) {
    use uuid::Uuid;

    // A booking stored and projected, its records up to date with its document.
    let teacher = teacher_of_school_3();
    let doc = kepu_sync_core::doc_id::DocumentId::from_bytes([9; 16]);
    let d = booking_of_school_3(
        &teacher,
        2,
        vec![PupilId(Uuid::from_u128(11)), PupilId(Uuid::from_u128(12))],
    );
    store_booking_changes(&db.store, doc, &d, &[]).await;
    let projection = kepu_server::records::project(doc, &d);
    kepu_server::records::write(&db.store, doc, &projection, None, now_ms())
        .await
        .unwrap();
    assert_eq!(
        db.store.stale_projections().await.unwrap(),
        vec![doc],
        "records written without their heads are still stale"
    );
    // Written with the heads they were computed at: records and heads commit together.
    kepu_server::records::write(&db.store, doc, &projection, Some(&d.get_heads()), now_ms())
        .await
        .unwrap();
    assert!(db.store.stale_projections().await.unwrap().is_empty());

    // Take the database back to before the roster table (migration 0008).
    for q in [
        "DROP TABLE proj_rosters",
        "DELETE FROM _sqlx_migrations WHERE version = 8",
    ] {
        sqlx::query(q).execute(db.store.pool()).await.unwrap();
    }

    // The upgraded server opens it and, before serving, recomputes the booking's records.
    let upgraded = Store::open(&db.url, None).await.unwrap();
    assert_eq!(
        kepu_server::records::reproject_stale(&upgraded)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        upgraded.booking_roster(&doc.to_string()).await.unwrap(),
        vec![Uuid::from_u128(11), Uuid::from_u128(12)],
        "the roster is there for the dashboard"
    );
    assert_eq!(
        kepu_server::records::reproject_stale(&upgraded)
            .await
            .unwrap(),
        0,
        "only once"
    );
    upgraded.close().await;
}

async fn a_bookings_attendance_is_read_from_one_snapshot(db: &TestDb) {
    use kepu_sync_core::edits::{Edit, apply_unchecked};
    use kepu_sync_core::schema::booking::ScanMethod;
    use uuid::Uuid;

    // A booking whose records are rewritten again and again as scans arrive, while staff
    // read its attendance: every answer's "arrived" agrees with the scans beside it.
    let store = db.store.clone();
    let teacher = teacher_of_school_3();
    let pupils: Vec<PupilId> = (100..140u128)
        .map(|n| PupilId(Uuid::from_u128(n)))
        .collect();
    let doc = kepu_sync_core::doc_id::DocumentId::from_bytes([9; 16]);
    let mut d = booking_of_school_3(&teacher, 40, pupils.clone());
    let mut projections = vec![kepu_server::records::project(doc, &d)];
    for (k, p) in pupils.iter().enumerate() {
        let scan = Edit::CheckIn {
            pupil: *p,
            scan_id: format!("s{k}"),
            method: ScanMethod::Manual,
            proof: None,
        };
        apply_unchecked(&mut d, &teacher, now_ms(), &scan).unwrap();
        projections.push(kepu_server::records::project(doc, &d));
    }
    kepu_server::records::write(&store, doc, &projections[0], None, now_ms())
        .await
        .unwrap();

    let writer_store = store.clone();
    let writer = tokio::spawn(async move {
        for round in 0..3 {
            for p in &projections {
                kepu_server::records::write(&writer_store, doc, p, None, now_ms() + round)
                    .await
                    .unwrap();
            }
        }
    });
    let id = doc.to_string();
    let mut reads = 0;
    while !writer.is_finished() {
        let a = store
            .booking_attendance(&id)
            .await
            .unwrap()
            .expect("the booking is known");
        let counted = a.scans.iter().filter(|s| s.counted).count();
        assert_eq!(
            usize::try_from(a.booking.arrived).unwrap(),
            counted,
            "arrived agrees with the counted scans in the same answer (read {reads})"
        );
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 0);
    assert!(
        store.booking_attendance("unknown").await.unwrap().is_none(),
        "an unknown booking has no attendance"
    );
}

/// Writes a booking's records as the storage worker does; the slot whose capacity
/// decision is due.
async fn write_booking(
    store: &Store,
    doc: kepu_sync_core::doc_id::DocumentId,
    d: &automerge::Automerge,
) -> Option<kepu_sync_core::ids::SlotId> {
    let projection = kepu_server::records::project(doc, d);
    kepu_server::records::write(store, doc, &projection, None, now_ms())
        .await
        .unwrap()
}

/// Check-ins change what a booking's records say but not what its slot's capacity
/// decision reads (ADR 0188): the decision is asked for when the booking is new, when its
/// status, party size or wait-list place changes, and when this process forgot what it
/// wrote; the booking keeps its arrival number and its attendance is written each time.
async fn a_booking_asks_for_its_slot_decision_only_when_what_it_is_decided_on_changes(db: &TestDb) {
    use kepu_sync_core::edits::{Edit, apply_unchecked};
    use kepu_sync_core::ids::SlotId;
    use kepu_sync_core::schema::booking::{ScanMethod, Status};
    use uuid::Uuid;

    let store = &db.store;
    let slot = Some(SlotId(Uuid::from_u128(5)));
    let teacher = teacher_of_school_3();
    let pupils: Vec<PupilId> = (200..203u128)
        .map(|n| PupilId(Uuid::from_u128(n)))
        .collect();
    let first = kepu_sync_core::doc_id::DocumentId::from_bytes([12; 16]);
    let d_first = booking_of_school_3(&teacher, 1, vec![PupilId(Uuid::from_u128(199))]);
    assert_eq!(
        write_booking(store, first, &d_first).await,
        slot,
        "a new booking"
    );
    let doc = kepu_sync_core::doc_id::DocumentId::from_bytes([11; 16]);
    let mut d = booking_of_school_3(&teacher, 3, pupils.clone());
    assert_eq!(write_booking(store, doc, &d).await, slot, "a new booking");
    assert_eq!(write_booking(store, doc, &d).await, None, "nothing changed");

    for (k, p) in pupils.iter().enumerate() {
        let scan = Edit::CheckIn {
            pupil: *p,
            scan_id: format!("t{k}"),
            method: ScanMethod::Manual,
            proof: None,
        };
        apply_unchecked(&mut d, &teacher, now_ms(), &scan).unwrap();
        assert_eq!(write_booking(store, doc, &d).await, None, "check-in {k}");
    }
    let a = store
        .booking_attendance(&doc.to_string())
        .await
        .unwrap()
        .expect("the booking's records");
    assert_eq!(
        a.booking.arrived, 3,
        "every check-in's write reached the row"
    );

    let decide = Edit::Decide {
        status: Status::Confirmed,
        wait_position: None,
    };
    apply_unchecked(&mut d, &teacher, now_ms(), &decide).unwrap();
    assert_eq!(
        write_booking(store, doc, &d).await,
        slot,
        "the status changed"
    );
    assert_eq!(write_booking(store, doc, &d).await, None);

    store.forget_written(doc);
    assert_eq!(write_booking(store, doc, &d).await, slot, "forgotten");

    apply_unchecked(&mut d, &teacher, now_ms(), &Edit::CancelBooking).unwrap();
    assert_eq!(write_booking(store, doc, &d).await, slot, "cancelled");
    let rows = store.bookings(None, None).await.unwrap();
    let order: Vec<String> = rows.iter().map(|r| r.doc_id.clone()).collect();
    assert_eq!(
        order,
        vec![first.to_string(), doc.to_string()],
        "the bookings keep the order they arrived in"
    );
    assert_eq!(rows[1].status, "cancelled");
    assert_eq!(rows[1].arrived, 3);
}

/// The teacher of school 3 who books in the roster and records tests.
/// Bookings whose records are written in one transaction (ADR 0190) get what each would
/// get alone: their rows, arrival numbers in the order given, and a capacity decision
/// asked for when new and not for check-ins; a second group rewrites only what changed.
async fn bookings_written_together_are_written_as_each_alone(db: &TestDb) {
    use kepu_sync_core::edits::{Edit, apply_unchecked};
    use kepu_sync_core::schema::booking::ScanMethod;
    use uuid::Uuid;

    let store = &db.store;
    let teacher = teacher_of_school_3();
    let docs: Vec<kepu_sync_core::doc_id::DocumentId> = (21..24u8)
        .map(|n| kepu_sync_core::doc_id::DocumentId::from_bytes([n; 16]))
        .collect();
    let mut bookings: Vec<automerge::Automerge> = (0..3u128)
        .map(|k| {
            let roster = (0..4u128)
                .map(|p| PupilId(Uuid::from_u128(300 + 10 * k + p)))
                .collect();
            booking_of_school_3(&teacher, 4, roster)
        })
        .collect();
    let check_in = |d: &mut automerge::Automerge, k: u128, p: u128| {
        let scan = Edit::CheckIn {
            pupil: PupilId(Uuid::from_u128(300 + 10 * k + p)),
            scan_id: format!("s{k}-{p}"),
            method: ScanMethod::Manual,
            proof: None,
        };
        apply_unchecked(d, &teacher, now_ms(), &scan).unwrap();
    };
    for (k, d) in bookings.iter_mut().enumerate() {
        for p in 0..=k as u128 {
            check_in(d, k as u128, p);
        }
    }
    assert_eq!(
        write_together(store, &docs, &bookings).await,
        vec![true; 3],
        "new bookings: their slot's decision is due"
    );
    let arrived = |doc: kepu_sync_core::doc_id::DocumentId| async move {
        store
            .booking_attendance(&doc.to_string())
            .await
            .unwrap()
            .expect("the booking's records")
    };
    for (k, doc) in docs.iter().enumerate() {
        let a = arrived(*doc).await;
        assert_eq!(a.booking.arrived, k as i64 + 1, "booking {k}");
        assert_eq!(a.scans.len(), k + 1, "booking {k}'s scans");
    }
    let order: Vec<String> = store
        .bookings(None, None)
        .await
        .unwrap()
        .iter()
        .map(|r| r.doc_id.clone())
        .collect();
    let expected: Vec<String> = docs.iter().map(ToString::to_string).collect();
    assert_eq!(order, expected, "arrival numbers in the order given");

    // A check-in to the second booking only: no decision asked for, its rows follow.
    check_in(&mut bookings[1], 1, 3);
    assert_eq!(
        write_together(store, &docs, &bookings).await,
        vec![false; 3],
        "check-ins alone"
    );
    assert_eq!(arrived(docs[1]).await.booking.arrived, 3);
    assert_eq!(arrived(docs[0]).await.booking.arrived, 1);
    assert_eq!(arrived(docs[2]).await.booking.arrived, 3);
}

/// While a venue is watched, the records write of its booking keeps the rows the live
/// dashboard reads (scans, anomalies, the devices that scanned) with the token it stores
/// (ADR 0193): the next read of the venue's day takes them from memory, and they are what
/// the records hold, as a node that never saw the write reads them. A write by another
/// node stores another token: the booking is read from the records again.
async fn a_watched_venues_dashboard_takes_a_bookings_rows_from_its_records_write(db: &TestDb) {
    use kepu_sync_core::calendar::{china_day, china_day_start};
    use kepu_sync_core::edits::{Edit, apply_unchecked};
    use kepu_sync_core::schema::booking::ScanMethod;
    use uuid::Uuid;

    let store = &db.store;
    let venue = Uuid::from_u128(4);
    let start = china_day_start(china_day(now_ms()));
    sqlx::query(
        "INSERT INTO proj_slots (slot_id, venue_id, start_ms, end_ms, capacity, label) \
         VALUES ($1, $2, $3, $4, 60, 'all day')",
    )
    .bind(Uuid::from_u128(5).to_string())
    .bind(venue.to_string())
    .bind(start)
    .bind(start + DAY_MS - 1)
    .execute(store.pool())
    .await
    .unwrap();
    let teacher = teacher_of_school_3();
    let pupil = |n: u128| PupilId(Uuid::from_u128(400 + n));
    let doc = kepu_sync_core::doc_id::DocumentId::from_bytes([31; 16]);
    let mut booking = booking_of_school_3(&teacher, 3, (0..3).map(pupil).collect());
    let scan = |d: &mut automerge::Automerge, edit: Edit| {
        apply_unchecked(d, &teacher, now_ms(), &edit).unwrap();
    };
    // Pupil 0 twice (a duplicate), pupil 1, a walk-in (an anomaly), a check-out.
    for (p, id) in [(0, "a"), (0, "b"), (1, "c"), (9, "d")] {
        scan(
            &mut booking,
            Edit::CheckIn {
                pupil: pupil(p),
                scan_id: id.into(),
                method: ScanMethod::Manual,
                proof: None,
            },
        );
    }
    scan(
        &mut booking,
        Edit::CheckOut {
            pupil: pupil(1),
            scan_id: "e".into(),
            method: ScanMethod::Manual,
        },
    );
    async fn day_of(s: &Store, venue: Uuid, start: i64) -> kepu_server::store::VenueDay {
        s.venue_day(venue, start, start + DAY_MS, false)
            .await
            .unwrap()
    }

    let watch = store.watch_venue(venue);
    write_together(store, &[doc], std::slice::from_ref(&booking)).await;
    let reads = store.day_rows_read();
    let from_memory = day_of(store, venue, start).await;
    assert_eq!(
        store.day_rows_read(),
        reads,
        "the booking's rows came from its records write"
    );
    assert_eq!(from_memory.bookings.len(), 1);
    assert_eq!(from_memory.scans.len(), 4, "{:?}", from_memory.scans);
    assert_eq!(from_memory.scans.iter().filter(|s| s.counted).count(), 3);
    assert!(!from_memory.anomalies.is_empty(), "the walk-in");

    let other = Store::open(&db.url, None).await.unwrap();
    let from_records = day_of(&other, venue, start).await;
    assert_eq!(
        other.day_rows_read(),
        1,
        "a node that never saw the write reads them"
    );
    assert_eq!(from_memory, from_records, "memory and records agree");

    // Another node writes a check-in: this node reads the booking again and shows it.
    scan(
        &mut booking,
        Edit::CheckIn {
            pupil: pupil(2),
            scan_id: "f".into(),
            method: ScanMethod::Manual,
            proof: None,
        },
    );
    write_together(&other, &[doc], std::slice::from_ref(&booking)).await;
    let after = day_of(store, venue, start).await;
    assert_eq!(
        store.day_rows_read(),
        reads + 1,
        "another node's write is read"
    );
    assert_eq!(after.scans.iter().filter(|s| s.counted).count(), 4);
    assert_eq!(after, day_of(&other, venue, start).await);

    // Unwatched, a write keeps nothing: the next read goes to the records.
    drop(watch);
    scan(
        &mut booking,
        Edit::CheckOut {
            pupil: pupil(2),
            scan_id: "g".into(),
            method: ScanMethod::Manual,
        },
    );
    write_together(store, &[doc], std::slice::from_ref(&booking)).await;
    day_of(store, venue, start).await;
    assert_eq!(store.day_rows_read(), reads + 2);
    // Nor is what a read found kept: the next read goes to the records again.
    day_of(store, venue, start).await;
    assert_eq!(
        store.day_rows_read(),
        reads + 3,
        "nothing is kept for a venue no one watches"
    );
    other.close().await;
}

/// Writes the records of `bookings` (of documents `docs`) in one transaction.
async fn write_together(
    store: &Store,
    docs: &[kepu_sync_core::doc_id::DocumentId],
    bookings: &[automerge::Automerge],
) -> Vec<bool> {
    use kepu_server::records::Projection;
    use kepu_server::store::BookingWrite;
    let projections: Vec<Projection> = docs
        .iter()
        .zip(bookings)
        .map(|(doc, d)| kepu_server::records::project(*doc, d))
        .collect();
    let writes: Vec<BookingWrite<'_>> = docs
        .iter()
        .zip(&projections)
        .map(|(doc, p)| match p {
            Projection::Booking(b) => BookingWrite {
                doc: *doc,
                booking: b,
                at: None,
            },
            other => panic!("not a booking: {other:?}"),
        })
        .collect();
    store
        .write_bookings_records(&writes, now_ms())
        .await
        .unwrap()
}

fn teacher_of_school_3() -> kepu_sync_core::writer::Writer {
    use kepu_sync_core::ids::UserId;
    use uuid::Uuid;
    kepu_sync_core::writer::Writer {
        device: DeviceId(Uuid::from_u128(1)),
        user: UserId(Uuid::from_u128(2)),
        role: kepu_sync_core::writer::Role::Teacher,
        school: Some(SchoolId(Uuid::from_u128(3))),
        venue: None,
        pupil: None,
    }
}

/// A booking document of school 3 at venue 4, slot 5, made by `teacher`.
fn booking_of_school_3(
    teacher: &kepu_sync_core::writer::Writer,
    party_size: u32,
    roster: Vec<PupilId>,
) -> automerge::Automerge {
    use kepu_sync_core::edits::{Edit, apply_unchecked};
    use kepu_sync_core::ids::{SlotId, VenueId};
    use uuid::Uuid;
    let mut d = automerge::Automerge::new();
    let create = Edit::CreateBooking {
        venue: VenueId(Uuid::from_u128(4)),
        slot: SlotId(Uuid::from_u128(5)),
        school: SchoolId(Uuid::from_u128(3)),
        party_size,
        roster,
    };
    apply_unchecked(&mut d, teacher, now_ms(), &create).unwrap();
    d
}

/// The database's count of a login name's attempts (shared by every node): the sixth
/// attempt within the window is refused and locks the name until the lock runs out; a
/// success clears it; failures long ago are forgotten.
async fn login_attempts_lock_a_name_for_every_node_and_are_forgotten(db: &TestDb) {
    let s = &db.store;
    let (max, lock, forget) = (5, 60_000, 900_000);
    for i in 0..5 {
        assert!(
            s.count_login_attempt("gate.x", 1_000 + i, max, lock, forget)
                .await
                .unwrap()
        );
    }
    assert!(
        !s.count_login_attempt("gate.x", 2_000, max, lock, forget)
            .await
            .unwrap()
    );
    assert!(
        !s.count_login_attempt("gate.x", 2_000 + lock - 1, max, lock, forget)
            .await
            .unwrap(),
        "locked until the lock runs out"
    );
    assert!(
        s.count_login_attempt("gate.x", 2_000 + lock, max, lock, forget)
            .await
            .unwrap()
    );
    // Other names are not affected.
    assert!(
        s.count_login_attempt("gate.y", 2_000, max, lock, forget)
            .await
            .unwrap()
    );
    // A success clears the name; an attempt that was not a guess is given back.
    s.clear_login_failures("gate.x").await.unwrap();
    for i in 0..4 {
        assert!(
            s.count_login_attempt("gate.x", 100_000 + i, max, lock, forget)
                .await
                .unwrap()
        );
    }
    s.uncount_login_attempt("gate.x").await.unwrap();
    assert!(
        s.count_login_attempt("gate.x", 100_010, max, lock, forget)
            .await
            .unwrap()
    );
    assert!(
        s.count_login_attempt("gate.x", 100_011, max, lock, forget)
            .await
            .unwrap()
    );
    assert!(
        !s.count_login_attempt("gate.x", 100_012, max, lock, forget)
            .await
            .unwrap()
    );
    // Failures long ago are forgotten.
    for i in 0..4 {
        assert!(
            s.count_login_attempt("gate.z", 200_000 + i, max, lock, forget)
                .await
                .unwrap()
        );
    }
    assert!(
        s.count_login_attempt("gate.z", 200_003 + forget, max, lock, forget)
            .await
            .unwrap()
    );
    for i in 0..4 {
        assert!(
            s.count_login_attempt("gate.z", 1_200_000 + i, max, lock, forget)
                .await
                .unwrap()
        );
    }
    assert!(
        !s.count_login_attempt("gate.z", 1_200_010, max, lock, forget)
            .await
            .unwrap()
    );
}

/// Two nodes compact the same document: the second, which compacts over the snapshot it
/// read before the first one's, is refused and changes nothing (its snapshot lacks what
/// the first one folded in); a load returns the snapshot's heads with its rows.
async fn a_snapshot_replaced_by_another_node_is_not_overwritten(db: &TestDb) {
    let doc = kepu_sync_core::doc_id::DocumentId::from_bytes([9; 16]);
    let (d, rows) = plain_changes(3);
    let stored = append(doc, rows.clone(), d.get_heads());
    db.store
        .run_document_tasks(&[&stored], now_ms())
        .await
        .unwrap();
    let loaded = db.store.load_document(doc).await.unwrap();
    assert_eq!(loaded.snapshot_heads, Some(Vec::new()), "no snapshot yet");
    // Node A compacts all three rows.
    let a = StorageTask::Compact {
        doc,
        snapshot: d.save(),
        heads: d.get_heads(),
        delete: rows.iter().map(|r| r.hash).collect(),
        replaces: Some(Vec::new()),
    };
    db.store.run_document_tasks(&[&a], now_ms()).await.unwrap();
    let compacted = db.store.load_document(doc).await.unwrap();
    assert!(
        compacted.changes.is_empty(),
        "the rows folded into the snapshot are deleted"
    );
    // Node B, which held only the first change, compacts over "no snapshot".
    let older = d.fork_at(&[rows[0].hash]).unwrap();
    let b = StorageTask::Compact {
        doc,
        snapshot: older.save(),
        heads: older.get_heads(),
        delete: vec![rows[0].hash],
        replaces: Some(Vec::new()),
    };
    let refused = db.store.run_document_tasks_isolated(&[&b], now_ms()).await;
    assert!(refused[0].is_err(), "a stale compaction is refused");
    let after = db.store.load_document(doc).await.unwrap();
    assert_eq!(after.snapshot_heads, Some(d.get_heads()));
    let restored = kepu_sync_core::stored::restore(after.snapshot.as_deref(), after.changes);
    assert_eq!(restored.doc.get_heads(), d.get_heads(), "nothing is lost");
    // Over the snapshot it now knows, B may compact (nothing lost either).
    let c = StorageTask::Compact {
        doc,
        snapshot: d.save(),
        heads: d.get_heads(),
        delete: Vec::new(),
        replaces: Some(d.get_heads()),
    };
    db.store.run_document_tasks(&[&c], now_ms()).await.unwrap();
}

/// A booking's day compacted at once: 450 change rows (more than one statement's worth)
/// are folded into the snapshot and deleted; the same changes stored under another
/// document stay.
async fn a_compaction_of_hundreds_of_changes_deletes_their_rows_only(db: &TestDb) {
    let doc = kepu_sync_core::doc_id::DocumentId::from_bytes([10; 16]);
    let other = kepu_sync_core::doc_id::DocumentId::from_bytes([11; 16]);
    let (d, rows) = plain_changes(450);
    for id in [doc, other] {
        let stored = append(id, rows.clone(), d.get_heads());
        db.store
            .run_document_tasks(&[&stored], now_ms())
            .await
            .unwrap();
    }
    let compact = StorageTask::Compact {
        doc,
        snapshot: d.save(),
        heads: d.get_heads(),
        delete: rows.iter().map(|r| r.hash).collect(),
        replaces: Some(Vec::new()),
    };
    db.store
        .run_document_tasks(&[&compact], now_ms())
        .await
        .unwrap();
    let compacted = db.store.load_document(doc).await.unwrap();
    assert!(compacted.changes.is_empty(), "every folded row is deleted");
    let restored =
        kepu_sync_core::stored::restore(compacted.snapshot.as_deref(), compacted.changes);
    assert_eq!(restored.doc.get_heads(), d.get_heads(), "nothing is lost");
    let untouched = db.store.load_document(other).await.unwrap();
    assert_eq!(untouched.changes.len(), 450, "another document's rows stay");
}
