//! The engine loads a document whose stored rows are partly corrupted: the rows that
//! parse are loaded, and the engine reports the ones that do not.

use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ROOT, ReadDoc};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::engine::{
    Config, Engine, Event, Input, IoResult, Loaded, Mode, StorageTask, StoredChange,
};
use kepu_sync_core::ids::DeviceId;
use kepu_sync_core::stored::LoadProblem;
use kepu_sync_core::writer::Writer;

#[test]
fn the_engine_reports_a_corrupted_change_row_and_loads_the_good_ones() {
    let mut original = Automerge::new();
    for (key, value) in [("topic", "optics"), ("room", "hall 2")] {
        let mut tx = original.transaction();
        tx.put(ROOT, key, value).unwrap();
        tx.commit();
    }
    let bad = ChangeHash([9; 32]);
    let mut rows: Vec<StoredChange> = original
        .get_changes(&[])
        .into_iter()
        .map(|c| StoredChange {
            hash: c.hash(),
            bytes: c.raw_bytes().to_vec(),
        })
        .collect();
    rows.push(StoredChange {
        hash: bad,
        bytes: vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3],
    });

    let writer = Writer::server(DeviceId(uuid::Uuid::from_u128(1)));
    let mut engine = Engine::new(Config::new(
        Mode::Client,
        "phone".into(),
        "phone-storage".into(),
        [3; 16],
        writer,
    ));
    let doc = DocumentId::from_bytes([5; 16]);
    let fx = engine.handle(1, Input::Want { doc });
    let (task, _) = fx
        .tasks
        .iter()
        .find(|(_, t)| matches!(t, StorageTask::Load { doc: d } if *d == doc))
        .expect("the engine asks to load the document");
    let fx = engine.handle(
        2,
        Input::IoDone {
            task: *task,
            result: IoResult::Loaded(Loaded {
                snapshot: None,
                changes: rows,
                sync_states: Vec::new(),
                snapshot_heads: None,
                stored_heads: None,
            }),
        },
    );

    let reported: Vec<&LoadProblem> = fx
        .events
        .iter()
        .filter_map(|e| match e {
            Event::LoadProblems { doc: d, problems } if *d == doc => Some(problems),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        matches!(reported.as_slice(), [LoadProblem::Row { hash, .. }] if *hash == bad),
        "{reported:?}"
    );
    let loaded = engine.doc(&doc).expect("the document is loaded");
    assert_eq!(loaded.get_heads(), original.get_heads());
    assert!(loaded.get(ROOT, "room").unwrap().is_some());
}
