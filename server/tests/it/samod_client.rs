//! samod, a third-party automerge-repo implementation, as a client of `/sync`: with a
//! device's token it finds the documents the device may read, and only those.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use kepu_server::accounts::Role;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::ids::{SchoolId, SlotId, VenueId};
use kepu_sync_core::schema::booking::Booking;
use samod::{BackoffConfig, DialError, Dialer, Repo, Transport};
use tokio_tungstenite::tungstenite::{self, Message as Ws, client::IntoClientRequest};

use crate::support::{TestServer, place};
use crate::world::{Enroller, create_booking, new_doc, pupils};

crate::support::on_both_databases!(
    multi_thread server:
    a_samod_repo_finds_a_booking_its_device_may_read_and_not_one_it_may_not,
    a_samod_repo_with_a_wrong_token_is_refused_at_the_upgrade,
);

/// How the dialer presents the device token.
#[derive(Clone, Copy)]
enum TokenIn {
    /// `Authorization: Bearer …`.
    Header,
    /// `?token=…`, as browsers must.
    Query,
}

/// A samod [`Dialer`] over tokio-tungstenite that authenticates with a device token.
struct TokenDialer {
    url: samod::Url,
    token: String,
    token_in: TokenIn,
}

impl TokenDialer {
    fn new(addr: std::net::SocketAddr, token: &str, token_in: TokenIn) -> Self {
        let url = match token_in {
            TokenIn::Header => format!("ws://{addr}/sync"),
            TokenIn::Query => format!("ws://{addr}/sync?token={token}"),
        };
        Self {
            url: samod::Url::parse(&url).expect("url"),
            token: token.to_owned(),
            token_in,
        }
    }
}

impl Dialer for TokenDialer {
    type Error = std::io::Error;

    fn url(&self) -> samod::Url {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'static, Result<Transport, DialError<Self::Error>>> {
        let url = self.url.to_string();
        let token = self.token.clone();
        let token_in = self.token_in;
        Box::pin(async move {
            let mut request = url.into_client_request().map_err(DialError::transient)?;
            if matches!(token_in, TokenIn::Header) {
                request.headers_mut().insert(
                    "authorization",
                    format!("Bearer {token}")
                        .parse()
                        .map_err(DialError::transient)?,
                );
            }
            let socket = match tokio_tungstenite::connect_async(request).await {
                Ok((socket, _)) => socket,
                Err(tungstenite::Error::Http(response)) => {
                    return Err(DialError::PermanentFailure(std::io::Error::other(format!(
                        "refused at the upgrade with {}",
                        response.status()
                    ))));
                }
                Err(e) => return Err(DialError::transient(e)),
            };
            let (sink, stream) = socket.split();
            let stream = stream.filter_map(|m| async move {
                match m {
                    Ok(Ws::Binary(bytes)) => Some(Ok(bytes.to_vec())),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            });
            let sink = sink.with(|bytes: Vec<u8>| async move {
                Ok::<_, tungstenite::Error>(Ws::Binary(bytes.into()))
            });
            Ok(Transport::new(Box::pin(stream), Box::pin(sink)))
        })
    }
}

fn samod_id(doc: DocumentId) -> samod::DocumentId {
    doc.to_string()
        .parse()
        .expect("the same bs58check document id")
}

async fn repo_for(
    server: &TestServer,
    token: &str,
    token_in: TokenIn,
) -> (Repo, Result<(), String>) {
    let repo = Repo::build_tokio().load().await;
    let backoff = BackoffConfig {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        max_retries: Some(2),
    };
    let dialer = repo
        .dial(
            backoff,
            Arc::new(TokenDialer::new(server.addr, token, token_in)),
        )
        .expect("repo running");
    let established = tokio::time::timeout(Duration::from_secs(10), dialer.established())
        .await
        .expect("the dialer settles")
        .map(|_| ())
        .map_err(|e| e.to_string());
    (repo, established)
}

async fn a_samod_repo_finds_a_booking_its_device_may_read_and_not_one_it_may_not(
    server: &TestServer,
) {
    let p = place(&server.db.store).await;
    let enroller = Enroller::new(&server.db.store, server.addr);
    let (venue, school) = (VenueId(p.venue), SchoolId(p.school));
    let mut teacher = enroller
        .device(Role::Teacher, Some(p.school), None, 1)
        .await;
    let booking = new_doc();
    teacher.edit(
        booking,
        create_booking(
            venue,
            SlotId(uuid::Uuid::from_u128(7)),
            school,
            pupils(700, 4),
        ),
    );
    teacher.sync(server.addr).await;
    assert!(teacher.server_has_all(&booking), "the server stored it");
    let expected = Booking::read(teacher.doc(&booking).unwrap()).unwrap();

    // Another teacher of the same school, through samod, with the bearer header.
    let colleague = user_token(&enroller, Role::Teacher, Some(p.school)).await;
    let (repo, established) = repo_for(server, &colleague, TokenIn::Header).await;
    established.expect("samod completes the handshake with a valid token");
    let handle = tokio::time::timeout(Duration::from_secs(10), repo.find(samod_id(booking)))
        .await
        .expect("find answers")
        .expect("repo running")
        .expect("the booking is found");
    let got = handle.with_document(|d| Booking::read(&*d));
    assert_eq!(
        got.as_ref(),
        Some(&expected),
        "samod holds the booking's content"
    );
    repo.stop().await;

    // A teacher of another school, through samod, with `?token=`: not found.
    let other_school = server
        .db
        .store
        .create_school(kepu_server::ids::new_id(), p.county, "另一所小学")
        .await
        .unwrap()
        .id;
    let stranger = user_token(&enroller, Role::Teacher, Some(other_school)).await;
    let (repo, established) = repo_for(server, &stranger, TokenIn::Query).await;
    established.expect("samod connects with a token in the query");
    let found = tokio::time::timeout(Duration::from_secs(10), repo.find(samod_id(booking)))
        .await
        .expect("find answers")
        .expect("repo running");
    assert!(
        found.is_none(),
        "a document the device may not read is unavailable"
    );
    repo.stop().await;
}

async fn a_samod_repo_with_a_wrong_token_is_refused_at_the_upgrade(server: &TestServer) {
    let (repo, established) = repo_for(server, "not-a-valid-token", TokenIn::Header).await;
    assert!(
        established.is_err(),
        "a wrong token is refused at the upgrade, so samod never connects"
    );
    repo.stop().await;
}

async fn user_token(enroller: &Enroller, role: Role, school: Option<uuid::Uuid>) -> String {
    let u = crate::support::user(&enroller.store, role, school, None, None).await;
    enroller.enroll(u).await.1
}
