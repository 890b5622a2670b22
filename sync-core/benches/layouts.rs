//! Figures for `docs/performance.md` and ADR 0205. Run:
//! `cargo bench -p kepu-sync-core --bench layouts`.
//!
//! What automerge 0.12 costs to merge a gate's day of check-ins into a booking, by how a
//! scan is written in the device's own map: schema 3's (a map per pupil, a map per scan
//! record and its three fields: two objects and five operations a scan), a map per pupil
//! holding each scan as one value (one object, two operations), and schema 4's (each
//! scan one value at `"<pupil>/<scan id>"`: one operation, no object). Ten gates of 250
//! scans each, a roster of 300; plain automerge, no kepu code on the path, so that the
//! figure is the layout's alone. Prints µs per check-in for the tenth gate's day merged
//! into the nine others', for all ten days merged one after another, and for single
//! check-ins merged one at a time into the full booking (the live day); best of three.

#![allow(clippy::cast_precision_loss, clippy::cast_possible_wrap)]

use std::time::Instant;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Automerge, Change, ObjType, ROOT};

const GATES: usize = 10;
const PER_GATE: usize = 250;
const PUPILS: usize = 300;
const T0: i64 = 1_767_225_600_000;

#[derive(Clone, Copy)]
enum Layout {
    /// Schema 3: `{device: {pupil: {scan: {at, method, by}}}}`.
    Records,
    /// `{device: {pupil: {scan: "<record>"}}}`.
    PupilMap,
    /// Schema 4: `{device: {"pupil/scan": "<record>"}}`.
    OneValue,
}

fn record(at: i64) -> String {
    format!(r#"{{"at":{at},"method":"manual","by":"0190dddd-0000-7000-8000-000000000001"}}"#)
}

/// The booking's container and each gate's copy holding `per` scans of its own.
fn days(layout: Layout, per: usize) -> (Automerge, Vec<Automerge>) {
    let mut base = AutoCommit::new().with_actor(ActorId::from([0x70u8; 16].as_slice()));
    let container = base
        .put_object(ROOT, "check_ins", ObjType::Map)
        .expect("container");
    base.commit();
    let base = base.document().clone();
    let mut gates = Vec::new();
    for g in 0..GATES {
        let mut d = AutoCommit::load(&base.save())
            .expect("load")
            .with_actor(ActorId::from(vec![g as u8 + 1; 16]));
        let device = format!("0190aaaa-0000-7000-8000-{g:012x}");
        let mine = d
            .put_object(&container, device.as_str(), ObjType::Map)
            .expect("device map");
        d.commit();
        for k in 0..per {
            let n = k * GATES + g;
            let pupil = format!("0190bbbb-0000-7000-8000-{:012x}", n % PUPILS);
            let scan = format!("0190cccc-0000-7000-8000-{n:012x}");
            let at = T0 + n as i64;
            match layout {
                Layout::Records => {
                    let p = d
                        .put_object(&mine, pupil.as_str(), ObjType::Map)
                        .expect("pupil");
                    let s = d.put_object(&p, scan.as_str(), ObjType::Map).expect("scan");
                    d.put(&s, "at", at).expect("at");
                    d.put(&s, "method", "manual").expect("method");
                    d.put(&s, "by", "0190dddd-0000-7000-8000-000000000001")
                        .expect("by");
                }
                Layout::PupilMap => {
                    let p = d
                        .put_object(&mine, pupil.as_str(), ObjType::Map)
                        .expect("pupil");
                    d.put(&p, scan.as_str(), record(at)).expect("record");
                }
                Layout::OneValue => {
                    d.put(&mine, format!("{pupil}/{scan}").as_str(), record(at))
                        .expect("record");
                }
            }
            d.commit();
        }
        gates.push(d.document().clone());
    }
    (base, gates)
}

/// Each gate's changes since the booking: its day (the device's map and `PER_GATE`
/// scans) and the scans after it.
fn split(base: &Automerge, gates: &[Automerge]) -> Vec<(Vec<Change>, Vec<Change>)> {
    gates
        .iter()
        .map(|g| {
            let mut day = g.get_changes(&base.get_heads());
            let later = day.split_off(1 + PER_GATE);
            (day, later)
        })
        .collect()
}

fn main() {
    println!(
        "layout                          | tenth day µs/check-in | ten days µs/check-in | live µs/check-in | saved bytes"
    );
    for (name, layout) in [
        ("schema 3: record maps (5 ops)", Layout::Records),
        ("a map per pupil (2 ops)", Layout::PupilMap),
        ("schema 4: one value (1 op)", Layout::OneValue),
    ] {
        // 20 more scans per gate after its day, for the live day: one change each.
        let (base, gates) = days(layout, PER_GATE + 20);
        let parts = split(&base, &gates);
        let (mut tenth, mut ten, mut live) = (f64::MAX, f64::MAX, f64::MAX);
        let mut saved = 0;
        for _ in 0..3 {
            let mut doc = base.clone();
            let mut days: Vec<Vec<Change>> = parts.iter().map(|(d, _)| d.clone()).collect();
            let last = days.pop().expect("ten days");
            let t = Instant::now();
            for day in days {
                doc.apply_changes(day).expect("merge");
            }
            let nine = t.elapsed().as_secs_f64();
            let t = Instant::now();
            doc.apply_changes(last).expect("merge");
            let one = t.elapsed().as_secs_f64();
            tenth = tenth.min(one / PER_GATE as f64);
            ten = ten.min((nine + one) / (GATES * PER_GATE) as f64);
            saved = doc.save().len();
            let extra: Vec<Change> = parts.iter().flat_map(|(_, l)| l.clone()).collect();
            let n = extra.len();
            let t = Instant::now();
            for c in extra {
                doc.apply_changes([c]).expect("merge");
            }
            live = live.min(t.elapsed().as_secs_f64() / n as f64);
        }
        println!(
            "{name:<31} | {:>21.1} | {:>20.1} | {:>16.1} | {saved:>11}",
            tenth * 1e6,
            ten * 1e6,
            live * 1e6
        );
    }
}
