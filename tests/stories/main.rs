//! End-to-end stories that no single crate can tell: the phone library (`kepu-mobile-ffi`,
//! its `KepuClient`) against the real `kepu-server` binary, seeded through its admin CLI,
//! on SQLite and on PostgreSQL.
//!
//! `KEPU_SERVER` names the binary; without it the stories build it once with cargo.
//! PostgreSQL comes from `KEPU_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! each story creates a database of its own and drops it, also when the story fails.

mod harness;

/// Writes each story once, as `async fn name(backend: Backend)`, and runs it as two tests,
/// `name::sqlite` and `name::postgres`.
macro_rules! stories {
    ($($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block)+) => {$(
        $(#[$meta])*
        async fn $name($backend: $crate::harness::Backend) $body

        mod $name {
            $(#[$meta])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::harness::Backend::Sqlite).await;
            }

            $(#[$meta])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::harness::Backend::Postgres).await;
            }
        }
    )+};
}

mod booking;
mod devices;
mod gate;
mod privacy;
mod restart;
mod school_day;
mod school_year;
