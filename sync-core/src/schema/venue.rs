//! The venue document: the 科普地图 profile, bookable slots and gate keys.
//!
//! ```text
//! { kind: "venue", schema, venue,
//!   profile: { name, venue_kind, address, phone, city, county, opening_hours,
//!              services, facilities, lat, lon, after_school? (schema 2), updated_at },
//!   instruments: { "<id>": { name, value_yuan, bookable } },
//!   slots: { "<slot>": { start, end, capacity, label } },
//!   gates: { "<device>": { key } } }
//! ```

use std::collections::BTreeMap;

use automerge::{ROOT, ReadDoc};

use crate::doc_read as r;
use crate::ids::{DeviceId, SlotId, VenueId};

/// Root keys.
pub mod key {
    /// Venue id.
    pub const VENUE: &str = "venue";
    /// Directory profile.
    pub const PROFILE: &str = "profile";
    /// Bookable instruments.
    pub const INSTRUMENTS: &str = "instruments";
    /// Slots.
    pub const SLOTS: &str = "slots";
    /// Gate devices and their public keys.
    pub const GATES: &str = "gates";
}

/// Text fields of the profile, in the order the directory shows them.
pub const PROFILE_TEXT_FIELDS: [&str; 9] = [
    "name",
    "venue_kind",
    "address",
    "phone",
    "city",
    "county",
    "opening_hours",
    "services",
    "facilities",
];

/// A bookable slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slot {
    /// Slot id.
    pub id: SlotId,
    /// Start, unix ms.
    pub start: i64,
    /// End, unix ms.
    pub end: i64,
    /// Places.
    pub capacity: u32,
    /// Label ("周三课后 15:30").
    pub label: String,
}

/// A bookable instrument (大型科研仪器, over 500k yuan).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Instrument {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Value in yuan.
    pub value_yuan: i64,
    /// Open to reservation.
    pub bookable: bool,
}

/// A venue read from its merged document.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Venue {
    /// Schema version.
    pub schema: i64,
    /// Venue id.
    pub venue: VenueId,
    /// Profile text fields present.
    pub profile: BTreeMap<String, String>,
    /// Latitude, longitude.
    pub location: Option<(f64, f64)>,
    /// Opening hours aligned with after-school time (schema 2).
    pub after_school: Option<bool>,
    /// When the profile was last edited.
    pub updated_at: Option<i64>,
    /// Instruments.
    pub instruments: Vec<Instrument>,
    /// Slots by start time.
    pub slots: Vec<Slot>,
    /// Gate devices with their base64 public keys.
    pub gates: BTreeMap<DeviceId, String>,
}

fn float<D: ReadDoc>(doc: &D, obj: &automerge::ObjId, k: &str) -> Option<f64> {
    match r::scalar(doc, obj, k)? {
        automerge::ScalarValue::F64(f) => Some(f),
        automerge::ScalarValue::Int(i) =>
        {
            #[allow(clippy::cast_precision_loss)]
            Some(i as f64)
        }
        _ => None,
    }
}

impl Venue {
    /// Reads a venue; `None` if the document is not a well-formed venue.
    pub fn read<D: ReadDoc>(doc: &D) -> Option<Self> {
        if crate::schema::kind_of(doc)? != crate::schema::DocKind::Venue {
            return None;
        }
        let mut profile = BTreeMap::new();
        let (mut location, mut after_school, mut updated_at) = (None, None, None);
        if let Some(p) = r::map(doc, &ROOT, key::PROFILE) {
            for f in PROFILE_TEXT_FIELDS {
                if let Some(v) = r::string(doc, &p, f) {
                    profile.insert(f.to_owned(), v);
                }
            }
            if let (Some(lat), Some(lon)) = (float(doc, &p, "lat"), float(doc, &p, "lon")) {
                location = Some((lat, lon));
            }
            after_school = r::boolean(doc, &p, "after_school");
            updated_at = r::int(doc, &p, "updated_at");
        }
        let mut instruments = Vec::new();
        if let Some(obj) = r::map(doc, &ROOT, key::INSTRUMENTS) {
            for id in r::keys(doc, &obj) {
                if let Some(i) = r::map(doc, &obj, &id) {
                    instruments.push(Instrument {
                        name: r::string(doc, &i, "name").unwrap_or_default(),
                        value_yuan: r::int(doc, &i, "value_yuan").unwrap_or(0),
                        bookable: r::boolean(doc, &i, "bookable").unwrap_or(false),
                        id,
                    });
                }
            }
        }
        let mut slots = Vec::new();
        if let Some(obj) = r::map(doc, &ROOT, key::SLOTS) {
            for id in r::keys(doc, &obj) {
                let (Ok(sid), Some(s)) = (id.parse::<SlotId>(), r::map(doc, &obj, &id)) else {
                    continue;
                };
                slots.push(Slot {
                    id: sid,
                    start: r::int(doc, &s, "start").unwrap_or(0),
                    end: r::int(doc, &s, "end").unwrap_or(0),
                    capacity: r::int(doc, &s, "capacity")
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(0),
                    label: r::string(doc, &s, "label").unwrap_or_default(),
                });
            }
        }
        slots.sort_by_key(|s| (s.start, s.id));
        let mut gates = BTreeMap::new();
        if let Some(obj) = r::map(doc, &ROOT, key::GATES) {
            for id in r::keys(doc, &obj) {
                let (Ok(dev), Some(g)) = (id.parse::<DeviceId>(), r::map(doc, &obj, &id)) else {
                    continue;
                };
                if let Some(k) = r::string(doc, &g, "key") {
                    gates.insert(dev, k);
                }
            }
        }
        Some(Self {
            schema: crate::schema::schema_of(doc),
            venue: r::parsed(doc, &ROOT, key::VENUE)?,
            profile,
            location,
            after_school,
            updated_at,
            instruments,
            slots,
            gates,
        })
    }

    /// The slot with this id.
    #[must_use]
    pub fn slot(&self, id: SlotId) -> Option<&Slot> {
        self.slots.iter().find(|s| s.id == id)
    }
}
