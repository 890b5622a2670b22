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
    as_int(&scalar(doc, obj, key)?)
}

/// A scalar as an integer (int, uint, counter, timestamp or a finite float).
#[must_use]
pub fn as_int(s: &ScalarValue) -> Option<i64> {
    match s {
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Some(*i),
        ScalarValue::Uint(u) => i64::try_from(*u).ok(),
        ScalarValue::Counter(c) => Some(i64::from(c)),
        ScalarValue::F64(f) if f.is_finite() =>
        {
            #[allow(clippy::cast_possible_truncation)]
            Some(*f as i64)
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

/// The entries of map `obj` whose values are maps, in key order, read in one pass over the
/// map (a lookup by key costs a seek through the document's columns each time, so
/// reading a large map key by key grows with the square of its size).
pub fn maps<D: ReadDoc>(doc: &D, obj: &ObjId) -> Vec<(String, ObjId)> {
    doc.map_range(obj, ..)
        .filter(|item| {
            matches!(
                item.value,
                automerge::ValueRef::Object(ObjType::Map | ObjType::Table)
            )
        })
        .map(|item| (item.key.to_string(), item.id()))
        .collect()
}

/// The scalar entries of one map, read in one pass; the typed getters read them as
/// [`string`], [`int`] and [`parsed`] read one key.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, ScalarValue)>);

impl Fields {
    /// The scalar entries of map `obj` (none if it is not a map).
    pub fn of<D: ReadDoc>(doc: &D, obj: &ObjId) -> Self {
        Self(
            doc.map_range(obj, ..)
                .filter_map(|item| match item.value.into_value() {
                    Value::Scalar(s) => Some((item.key.into_owned(), s.into_owned())),
                    Value::Object(_) => None,
                })
                .collect(),
        )
    }

    /// Entries already read (by a walk of the document).
    pub(crate) fn from(entries: Vec<(String, ScalarValue)>) -> Self {
        Self(entries)
    }

    fn get(&self, key: &str) -> Option<&ScalarValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A string at `key`.
    pub fn string(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }

    /// An integer at `key`, as [`int`].
    pub fn int(&self, key: &str) -> Option<i64> {
        as_int(self.get(key)?)
    }

    /// A value parsed from the string at `key`.
    pub fn parsed<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.string(key)?.parse().ok()
    }
}

/// The keys of the map at `key` in `obj` (empty if absent).
pub fn keys<D: ReadDoc>(doc: &D, obj: &ObjId) -> Vec<String> {
    doc.keys(obj).collect()
}
