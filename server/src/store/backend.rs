//! Which database a [`Store`](crate::store::Store) talks to.

use crate::error::{Error, Result};

/// The two supported databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (WAL), the default.
    Sqlite,
    /// PostgreSQL, for many nodes.
    Postgres,
}

impl Backend {
    /// Picks the backend from a URL's scheme.
    ///
    /// # Errors
    /// The scheme is neither `sqlite:` nor `postgres:`/`postgresql:`.
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(Error::Config(
                "DATABASE_URL must start with sqlite: or postgres:".into(),
            )),
        }
    }

    /// A short name for logs and metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}
