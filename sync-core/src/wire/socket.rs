//! A protocol message on a websocket, sent in pieces (ADR 0192; feature `socket`).
//!
//! The websocket library formats a whole frame into a connection's write buffer before
//! the socket takes it, and the buffer keeps that capacity while the connection lives;
//! the reading side's buffer likewise keeps room for the largest frame it read. A
//! message larger than [`PIECE`](super::PIECE) therefore goes out as a fragmented message (RFC 6455,
//! section 5.4): a binary frame and continuation frames of `PIECE` bytes, each written
//! out before the next is buffered. Every websocket client reassembles it.

use futures_util::{Sink, SinkExt};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Error, Message};

use super::pieces;

/// Sends `bytes` as one binary message: in one frame up to [`PIECE`](super::PIECE), else
/// as a fragmented message of `PIECE`-sized frames (the last one shorter), each written out
/// before the next is buffered.
///
/// # Errors
/// The connection failed or is closed.
pub async fn send_binary<S>(socket: &mut S, bytes: Vec<u8>) -> Result<(), Error>
where
    S: Sink<Message, Error = Error> + Unpin,
{
    let bytes = Bytes::from(bytes);
    let pieces = pieces(bytes.len());
    if pieces.len() == 1 {
        return socket.send(Message::Binary(bytes)).await;
    }
    let last = pieces.len() - 1;
    for (i, range) in pieces.enumerate() {
        let opcode = OpCode::Data(if i == 0 { Data::Binary } else { Data::Continue });
        let frame = Frame::message(bytes.slice(range), opcode, i == last);
        socket.send(Message::Frame(frame)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::wire::PIECE;

    /// The frames a server wrote, read off the wire: (final, opcode, payload length).
    fn frames(mut wire: &[u8]) -> Vec<(bool, u8, usize)> {
        let mut out = Vec::new();
        while wire.len() >= 2 {
            let fin = wire[0] & 0x80 != 0;
            let opcode = wire[0] & 0x0f;
            assert_eq!(wire[1] & 0x80, 0, "a server's frames are not masked");
            let (len, header) = match wire[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&wire[2..10]);
                    (usize::try_from(u64::from_be_bytes(b)).unwrap(), 10)
                }
                n => (usize::from(n), 2),
            };
            out.push((fin, opcode, len));
            wire = &wire[header + len..];
        }
        out
    }

    async fn sent_on_the_wire(bytes: Vec<u8>) -> Vec<u8> {
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let mut socket = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        send_binary(&mut socket, bytes).await.unwrap();
        drop(socket);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.unwrap();
        wire
    }

    #[tokio::test]
    async fn a_large_message_goes_out_in_pieces_and_arrives_whole() {
        let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let wire = sent_on_the_wire(message.clone()).await;
        let frames = frames(&wire);
        assert_eq!(frames.len(), 7, "{frames:?}");
        assert_eq!(frames[0], (false, 2, PIECE), "a binary frame starts it");
        for f in &frames[1..6] {
            assert_eq!(*f, (false, 0, PIECE), "continuation frames");
        }
        assert_eq!(
            frames[6],
            (true, 0, 100_000 - 6 * PIECE),
            "the last one ends it"
        );
        // A client reassembles one message.
        let (mut feed, end) = tokio::io::duplex(1 << 20);
        feed.write_all(&wire).await.unwrap();
        let mut client = WebSocketStream::from_raw_socket(end, Role::Client, None).await;
        match client.next().await {
            Some(Ok(Message::Binary(got))) => assert!(got[..] == message[..], "the same bytes"),
            other => panic!("one binary message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_small_message_is_one_frame() {
        let wire = sent_on_the_wire(vec![7; PIECE]).await;
        assert_eq!(frames(&wire), vec![(true, 2, PIECE)]);
    }
}
