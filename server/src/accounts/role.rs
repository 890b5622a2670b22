//! The roles a user can have: the core's [`Role`], one vocabulary for the server, the
//! phone library and the validation rules. A user is never [`Role::Server`]: text that
//! names a user's role (a request, the admin CLI, a database row) is read with
//! [`Role::parse_user`] or [`Role::deserialize_user`], which refuse it.

pub use kepu_sync_core::writer::{Role, UnknownRole};
