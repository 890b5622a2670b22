//! Small typed readers over an automerge document, tolerant of missing or mistyped
//! values (a document written by an older or newer schema must still read).

use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value};

/// The object at `key` in map `obj`, if it is a map.
pub fn map<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(obj, key).ok().flatten()? {
        (Value::Object(ObjType::Map | ObjType::Table), id) => Some(id),
        _ => None,
    }
}

/// The scalar at `key` in map `obj`.
pub fn scalar<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<ScalarValue> {
    match doc.get(obj, key).ok().flatten()? {
        (Value::Scalar(s), _) => Some(s.into_owned()),
        _ => None,
    }
}

/// A string at `key`.
pub fn string<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<String> {
    match scalar(doc, obj, key)? {
        ScalarValue::Str(s) => Some(s.to_string()),
        _ => None,
    }
}

/// An integer at `key` (int, uint, counter or timestamp).
pub fn int<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<i64> {
    match scalar(doc, obj, key)? {
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Some(i),
        ScalarValue::Uint(u) => i64::try_from(u).ok(),
        ScalarValue::Counter(c) => Some(i64::from(&c)),
        ScalarValue::F64(f) if f.is_finite() =>
        {
            #[allow(clippy::cast_possible_truncation)]
            Some(f as i64)
        }
        _ => None,
    }
}

/// A boolean at `key`.
pub fn boolean<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<bool> {
    match scalar(doc, obj, key)? {
        ScalarValue::Boolean(b) => Some(b),
        _ => None,
    }
}

/// A value parsed from the string at `key`.
pub fn parsed<D: ReadDoc, T: std::str::FromStr>(doc: &D, obj: &ObjId, key: &str) -> Option<T> {
    string(doc, obj, key)?.parse().ok()
}

/// The keys of the map at `key` in `obj` (empty if absent).
pub fn keys<D: ReadDoc>(doc: &D, obj: &ObjId) -> Vec<String> {
    doc.keys(obj).collect()
}
