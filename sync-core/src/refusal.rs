//! Refusal codes: every machine-readable reason kepu gives for refusing a change, a
//! message or a connection, in one enum that prints to and parses from the wire.
//!
//! The text forms are stable API: devices show them, admins filter on them and the wire
//! carries them in the `refusal` key of an `error` message (`docs/protocol.md`). A code
//! this build does not know (a newer server's) parses to [`RefusalCode::Other`] and prints
//! back unchanged, so nothing is lost on the way through an older phone.

/// Declares [`RefusalCode`] with its text forms, from one table.
macro_rules! refusal_codes {
    ($( $(#[$doc:meta])* $name:ident = $text:literal, )*) => {
        /// Why something was refused. See the module documentation.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum RefusalCode {
            $( $(#[$doc])* $name, )*
            /// A code this build does not know, kept as it arrived.
            Other(String),
        }

        impl RefusalCode {
            /// Every code this build knows, in the order of the table.
            pub const KNOWN: &'static [Self] = &[$( Self::$name, )*];

            /// The stable text form.
            #[must_use]
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$name => $text, )*
                    Self::Other(text) => text,
                }
            }

            /// The code for a text form; an unknown text is kept as [`Self::Other`].
            #[must_use]
            pub fn parse(text: &str) -> Self {
                match text {
                    $( $text => Self::$name, )*
                    other => Self::Other(other.to_owned()),
                }
            }
        }
    };
}

refusal_codes! {
    // Rules of the documents (`docs/conflict-rules.md`): the changes are not merged.

    /// The writer's role may not write this field of this kind of document.
    RoleMayNotWrite = "role-may-not-write",
    /// Only the server decides a booking's status.
    StatusIsServerOnly = "status-is-server-only",
    /// A scan or confirmation must be recorded under the writer's own device id.
    NotOwnDevice = "not-own-device",
    /// A pupil may only check themselves in.
    NotOwnPupil = "not-own-pupil",
    /// A pupil may only check in on a booking whose roster holds them.
    NotOnRoster = "not-on-roster",
    /// Venue staff may only touch their own venue's documents.
    OtherVenue = "other-venue",
    /// Teachers may only touch their own school's documents.
    OtherSchool = "other-school",
    /// The writer is not the owner of this log.
    NotOwner = "not-owner",
    /// A recorded scan is never changed, and its id names no other scan of its device.
    ScanImmutable = "scan-immutable",
    /// Nothing is deleted from this part of the document (check-ins above all).
    NoDelete = "no-delete",
    /// A field that is not in the schema.
    UnknownField = "unknown-field",
    /// A field fixed at creation (kind, venue, school, …).
    ImmutableField = "immutable-field",
    /// The writer may not create this kind of document.
    MayNotCreate = "may-not-create",
    /// A value of the wrong type or out of range.
    MalformedValue = "malformed-value",
    /// A text object (what the JavaScript automerge library makes of a plain string)
    /// where the schema holds a string scalar: write the string as a scalar
    /// (`new Automerge.RawString(…)` in JavaScript).
    TextNotScalar = "text-not-scalar",
    /// The document has no known kind.
    UnknownKind = "unknown-kind",
    /// The change depends on a change that was refused.
    DependsOnRefused = "depends-on-refused",
    /// The proof attached to a check-in does not verify.
    BadProof = "bad-proof",
    /// The device lost read access to the document before these changes reached the
    /// server (client side; the changes are kept aside, not dropped).
    AccessLost = "access-lost",
    /// A value or key longer than its field allows.
    TooLong = "too-long",
    /// An activity's fields are fixed once staff confirmed or declined it.
    ActivityConfirmed = "activity-confirmed",
    /// The change is written under an actor id that belongs to another device (or to the
    /// server): each device writes only under its own actor ids.
    ForeignActor = "foreign-actor",
    /// The document's creating change stamps a schema version newer than this engine's:
    /// it was made by a newer app than the server knows (upgrade the server first; the
    /// change is kept aside on the device, ADR 0171).
    SchemaTooNew = "schema-too-new",

    // Limits on one sync message (`docs/protocol.md`, "Limits on what a device sends"):
    // nothing of the message is applied; the connection stays open.

    /// A chunk inflates beyond its bound, or a message's chunks do together.
    PayloadTooLarge = "payload-too-large",
    /// A change or a message declares more operations than allowed.
    TooManyOperations = "too-many-operations",
    /// A message carries more changes than allowed.
    TooManyChanges = "too-many-changes",
    /// A chunk type no device needs to send (bundles, unknown types).
    ChunkTypeRefused = "chunk-type-refused",
    /// Bytes that are not a well-formed automerge sync message.
    MalformedSync = "malformed-sync",
    /// Too much waits for changes the server has not seen.
    DependencyQueueFull = "dependency-queue-full",
    /// A device wrote under more actor ids than allowed.
    TooManyActors = "too-many-actors",
    /// More ephemeral messages per second than allowed (the rest of the second's are
    /// dropped).
    RateLimited = "rate-limited",
    /// A device asked for more documents on one connection than allowed.
    TooManyDocuments = "too-many-documents",

    // The connection: the server closes it after saying why.

    /// A frame that is not a protocol message.
    MalformedMessage = "malformed-message",
    /// A message before the `join` handshake.
    NotJoined = "not-joined",
    /// The peer speaks no protocol version the server does.
    UnsupportedProtocol = "unsupported-protocol",
    /// The server is at its limit of queued work; reconnect later.
    Overloaded = "overloaded",
    /// The server could not store the document; reconnect later and send again.
    StorageUnavailable = "storage-unavailable",
    /// The device was revoked; its local data is wiped.
    DeviceRevoked = "device-revoked",
    /// The app is older than the minimum version the server set for the device's role
    /// (at the `/sync` upgrade): the device keeps everything and syncs once updated.
    AppTooOld = "app-too-old",
}

impl RefusalCode {
    /// A code about the rules of a document (the changes are kept aside on the device
    /// and shown to its user), as opposed to one about a message or the connection.
    #[must_use]
    pub fn is_rule(&self) -> bool {
        use RefusalCode as C;
        matches!(
            self,
            C::RoleMayNotWrite
                | C::StatusIsServerOnly
                | C::NotOwnDevice
                | C::NotOwnPupil
                | C::NotOnRoster
                | C::OtherVenue
                | C::OtherSchool
                | C::NotOwner
                | C::ScanImmutable
                | C::NoDelete
                | C::UnknownField
                | C::ImmutableField
                | C::MayNotCreate
                | C::MalformedValue
                | C::TextNotScalar
                | C::UnknownKind
                | C::DependsOnRefused
                | C::BadProof
                | C::AccessLost
                | C::TooLong
                | C::ActivityConfirmed
                | C::ForeignActor
                | C::SchemaTooNew
        )
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for RefusalCode {
    fn from(text: &str) -> Self {
        Self::parse(text)
    }
}

impl serde::Serialize for RefusalCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for RefusalCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::RefusalCode;

    #[test]
    fn every_known_code_prints_and_parses_back_to_itself() {
        let mut seen = std::collections::HashSet::new();
        for code in RefusalCode::KNOWN {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} is listed twice");
            assert_eq!(&RefusalCode::parse(text), code);
            assert!(
                text.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{text} is not kebab-case"
            );
        }
    }

    #[test]
    fn an_unknown_code_from_a_newer_server_is_kept_as_it_arrived() {
        let code = RefusalCode::parse("quota-exceeded");
        assert_eq!(code, RefusalCode::Other("quota-exceeded".into()));
        assert_eq!(code.to_string(), "quota-exceeded");
        assert!(!code.is_rule());
    }

    #[test]
    fn the_json_form_is_the_text_form() {
        let json = serde_json::to_string(&RefusalCode::NotOnRoster).unwrap();
        assert_eq!(json, "\"not-on-roster\"");
        let back: RefusalCode = serde_json::from_str("\"text-not-scalar\"").unwrap();
        assert_eq!(back, RefusalCode::TextNotScalar);
    }
}
