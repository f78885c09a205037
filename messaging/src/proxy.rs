//! The pulsar-lite compatibility proxy: a loopback TCP proxy between pulsar-rs and pulsar-lite.
//!
//! pulsar-lite sends MESSAGE frames without the optional magic number and CRC32C checksum, which
//! pulsar-rs requires; the proxy adds them. It rewrites the broker URL in LOOKUP_RESPONSE frames to
//! its own, so that clients stay behind it. Every other frame, and everything the client sends,
//! passes through untouched.
//!
//! Two behaviours matter to pulsar-rs beyond the frames. While the broker is away, a new client
//! connection is held open and the broker retried until it is back: pulsar-rs treats a connection
//! reset right after connecting as fatal, and its consumer would die silently. And pulsar-rs never
//! sets TCP_NODELAY, so a consumer and a producer sharing its connection wait behind Nagle's
//! algorithm and delayed ACKs (20-24 ms a send); the proxy acknowledges at once by re-arming
//! TCP_QUICKACK after every read from the client.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;
use pulsar::message::proto::{BaseCommand, base_command::Type};
use socket2::SockRef;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const MAGIC: u16 = 0x0e01;
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
/// The largest frame the proxy buffers: Pulsar's 5 MiB message limit plus its envelope, with room.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
const BROKER_RETRY: Duration = Duration::from_millis(100);

/// A frame the proxy cannot pass on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the proxy's limit")]
    TooLarge(usize),
    #[error("frame is shorter than its command")]
    Malformed,
    #[error("cannot decode the frame's command")]
    Command(#[from] prost::DecodeError),
}

/// Reassembles the broker's byte stream into frames and rewrites the ones pulsar-rs cannot take.
#[derive(Debug)]
pub struct BrokerFrames {
    buffer: BytesMut,
    proxy_url: String,
}

impl BrokerFrames {
    /// `proxy_url` replaces the broker URL in lookup responses (`pulsar://host:port`).
    pub fn new(proxy_url: String) -> Self {
        Self {
            buffer: BytesMut::new(),
            proxy_url,
        }
    }

    /// Takes bytes as they came from the broker; returns the bytes to send to the client: every
    /// frame completed by them, rewritten where needed. A partial frame waits for more bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<BytesMut, FrameError> {
        self.buffer.extend_from_slice(bytes);
        let mut out = BytesMut::new();
        while self.buffer.len() >= 4 {
            let size = u32::from_be_bytes([
                self.buffer[0],
                self.buffer[1],
                self.buffer[2],
                self.buffer[3],
            ]) as usize;
            if size > MAX_FRAME_BYTES {
                return Err(FrameError::TooLarge(size));
            }
            if self.buffer.len() < 4 + size {
                break;
            }
            self.buffer.advance(4);
            let frame = self.buffer.split_to(size).freeze();
            self.rewrite(frame, &mut out)?;
        }
        Ok(out)
    }

    /// Appends one frame (without its total-size prefix) to `out`, rewritten where needed.
    fn rewrite(&self, frame: Bytes, out: &mut BytesMut) -> Result<(), FrameError> {
        if frame.len() < 4 {
            return Err(FrameError::Malformed);
        }
        let command_size = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        let rest_at = 4 + command_size;
        if frame.len() < rest_at {
            return Err(FrameError::Malformed);
        }
        let mut command = BaseCommand::decode(&frame[4..rest_at])?;
        let rest = frame.slice(rest_at..);
        let command_type = command.r#type();
        if command_type == Type::Message
            && !rest.is_empty()
            && !rest.starts_with(&MAGIC.to_be_bytes())
        {
            // The checksum covers everything after it: metadata size, metadata and payload.
            out.put_u32((frame.len() + 6) as u32);
            out.put_slice(&frame[..rest_at]);
            out.put_u16(MAGIC);
            out.put_u32(CRC32C.checksum(&rest));
            out.put_slice(&rest);
        } else if command_type == Type::LookupResponse
            && let Some(lookup) = command.lookup_topic_response.as_mut()
        {
            lookup.broker_service_url = Some(self.proxy_url.clone());
            lookup.broker_service_url_tls = None;
            lookup.proxy_through_service_url = Some(false);
            let encoded = command.encode_to_vec();
            out.put_u32((4 + encoded.len() + rest.len()) as u32);
            out.put_u32(encoded.len() as u32);
            out.put_slice(&encoded);
            out.put_slice(&rest);
        } else {
            out.put_u32(frame.len() as u32);
            out.put_slice(&frame);
        }
        Ok(())
    }
}

/// A running proxy. Dropping it stops accepting; [`Proxy::stop`] also ends the open connections.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    stop: CancellationToken,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` (port 0 picks one) and forwards to the broker at `broker`.
    pub async fn start(listen: SocketAddr, broker: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        let stop = CancellationToken::new();
        let url = format!("pulsar://{address}");
        let accept = tokio::spawn(accept_loop(listener, broker, url, stop.clone()));
        Ok(Proxy {
            address,
            stop,
            accept,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("pulsar://{}", self.address)
    }

    /// Stops accepting and closes every connection through the proxy.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.accept).await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    broker: SocketAddr,
    url: String,
    stop: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match client {
            Ok((client, peer)) => {
                tokio::spawn(connection(
                    client,
                    broker,
                    url.clone(),
                    stop.child_token(),
                    peer,
                ));
            }
            Err(error) => tracing::warn!(%error, "proxy accept failed"),
        }
    }
}

async fn connection(
    client: TcpStream,
    broker: SocketAddr,
    url: String,
    stop: CancellationToken,
    peer: SocketAddr,
) {
    let upstream = loop {
        match TcpStream::connect(broker).await {
            Ok(upstream) => break upstream,
            Err(error) => {
                tracing::debug!(%error, %peer, "broker unreachable; holding the client connection");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(BROKER_RETRY) => {}
                }
            }
        }
    };
    for stream in [&client, &upstream] {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut broker_read, mut broker_write) = upstream.into_split();

    let to_broker = async {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = client_read.read(&mut buffer).await?;
            if read == 0 {
                return io::Result::Ok(());
            }
            // Acknowledge the client's segments at once, so its Nagle algorithm releases the next.
            let _ = SockRef::from(client_read.as_ref()).set_tcp_quickack(true);
            broker_write.write_all(&buffer[..read]).await?;
        }
    };
    let to_client = async {
        let mut frames = BrokerFrames::new(url);
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = broker_read.read(&mut buffer).await?;
            if read == 0 {
                return io::Result::Ok(());
            }
            let out = frames.push(&buffer[..read]).map_err(io::Error::other)?;
            if !out.is_empty() {
                client_write.write_all(&out).await?;
            }
        }
    };
    // Either side ending ends both: the client sees the broker's disconnect and reconnects.
    let outcome = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        done = to_broker => done,
        done = to_client => done,
    };
    if let Err(error) = outcome {
        tracing::debug!(%error, %peer, "proxied connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsar::message::Codec;
    use pulsar::message::proto::{
        CommandLookupTopicResponse, CommandMessage, CommandPong, MessageIdData, MessageMetadata,
        command_lookup_topic_response::LookupType,
    };
    use tokio_util::codec::Decoder;

    const PROXY: &str = "pulsar://127.0.0.1:7000";

    fn command_frame(command: &BaseCommand, rest: &[u8]) -> Vec<u8> {
        let encoded = command.encode_to_vec();
        let mut frame = Vec::new();
        frame.extend_from_slice(&((4 + encoded.len() + rest.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        frame.extend_from_slice(&encoded);
        frame.extend_from_slice(rest);
        frame
    }

    /// A MESSAGE frame as pulsar-lite sends it: metadata and payload, no magic, no checksum.
    fn lite_message(entry: u64, payload: &[u8]) -> Vec<u8> {
        let command = BaseCommand {
            r#type: Type::Message as i32,
            message: Some(CommandMessage {
                consumer_id: 1,
                message_id: MessageIdData {
                    ledger_id: 7,
                    entry_id: entry,
                    ..MessageIdData::default()
                },
                ..CommandMessage::default()
            }),
            ..BaseCommand::default()
        };
        let metadata = MessageMetadata {
            producer_name: "p".into(),
            sequence_id: entry,
            publish_time: 1,
            partition_key: Some("key".into()),
            ..MessageMetadata::default()
        }
        .encode_to_vec();
        let mut rest = (metadata.len() as u32).to_be_bytes().to_vec();
        rest.extend_from_slice(&metadata);
        rest.extend_from_slice(payload);
        command_frame(&command, &rest)
    }

    fn lookup_response() -> Vec<u8> {
        command_frame(
            &BaseCommand {
                r#type: Type::LookupResponse as i32,
                lookup_topic_response: Some(CommandLookupTopicResponse {
                    broker_service_url: Some("pulsar://0.0.0.0:6650".into()),
                    response: Some(LookupType::Connect as i32),
                    request_id: 3,
                    proxy_through_service_url: Some(true),
                    ..CommandLookupTopicResponse::default()
                }),
                ..BaseCommand::default()
            },
            &[],
        )
    }

    fn pong() -> Vec<u8> {
        command_frame(
            &BaseCommand {
                r#type: Type::Pong as i32,
                pong: Some(CommandPong {}),
                ..BaseCommand::default()
            },
            &[],
        )
    }

    /// Decodes a client-bound byte stream the way pulsar-rs does.
    fn pulsar_rs_decodes(
        bytes: &[u8],
    ) -> Result<Vec<pulsar::message::Message>, pulsar::error::ConnectionError> {
        let mut buffer = BytesMut::from(bytes);
        let mut messages = Vec::new();
        while let Some(message) = Codec.decode(&mut buffer)? {
            messages.push(message);
        }
        assert!(
            buffer.is_empty(),
            "pulsar-rs left {} bytes undecoded",
            buffer.len()
        );
        Ok(messages)
    }

    #[test]
    fn pulsar_rs_refuses_a_message_frame_without_magic_and_checksum() {
        // Why the proxy exists: the negative control for the test below.
        let decoded = pulsar_rs_decodes(&lite_message(1, b"hello"));
        assert!(decoded.is_err(), "pulsar-rs accepted {decoded:?}");
    }

    #[test]
    fn frames_split_at_every_boundary_come_out_as_pulsar_rs_expects() {
        let stream: Vec<u8> = [
            lite_message(1, b"hello"),
            pong(),
            lookup_response(),
            lite_message(2, &[9; 300]),
        ]
        .concat();
        for split in 0..=stream.len() {
            let mut frames = BrokerFrames::new(PROXY.into());
            let mut out = frames.push(&stream[..split]).expect("first part");
            out.extend_from_slice(&frames.push(&stream[split..]).expect("second part"));
            let decoded = pulsar_rs_decodes(&out).expect("pulsar-rs decodes what the proxy sends");
            assert_eq!(decoded.len(), 4, "split at {split}");
            let payload = |m: &pulsar::message::Message| m.payload.as_ref().map(|p| p.data.clone());
            assert_eq!(payload(&decoded[0]), Some(b"hello".to_vec()));
            assert_eq!(decoded[1].command.r#type(), Type::Pong);
            let lookup = decoded[2]
                .command
                .lookup_topic_response
                .as_ref()
                .expect("lookup");
            assert_eq!(lookup.broker_service_url.as_deref(), Some(PROXY));
            assert_eq!(lookup.proxy_through_service_url, Some(false));
            assert_eq!(lookup.request_id, 3);
            assert_eq!(payload(&decoded[3]), Some(vec![9; 300]));
        }
    }

    #[test]
    fn byte_by_byte_input_gives_the_same_output() {
        let stream: Vec<u8> = [lite_message(1, b"a"), lookup_response(), pong()].concat();
        let whole = BrokerFrames::new(PROXY.into())
            .push(&stream)
            .expect("whole");
        let mut frames = BrokerFrames::new(PROXY.into());
        let mut trickled = BytesMut::new();
        for byte in &stream {
            trickled.extend_from_slice(&frames.push(std::slice::from_ref(byte)).expect("byte"));
        }
        assert_eq!(trickled, whole);
    }

    #[test]
    fn frames_that_already_carry_a_checksum_and_other_commands_pass_untouched() {
        let checked = BrokerFrames::new(PROXY.into())
            .push(&lite_message(1, b"x"))
            .expect("rewrite");
        let again = BrokerFrames::new(PROXY.into())
            .push(&checked)
            .expect("second pass");
        assert_eq!(again, checked);
        let ping = pong();
        assert_eq!(
            &BrokerFrames::new(PROXY.into()).push(&ping).expect("pong")[..],
            &ping[..]
        );
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let huge = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        assert!(matches!(
            BrokerFrames::new(PROXY.into()).push(&huge),
            Err(FrameError::TooLarge(_))
        ));
        let short = [0, 0, 0, 2, 0, 9];
        assert!(matches!(
            BrokerFrames::new(PROXY.into()).push(&short),
            Err(FrameError::Malformed)
        ));
        let garbage = [0, 0, 0, 6, 0, 0, 0, 2, 0xff, 0xff];
        assert!(matches!(
            BrokerFrames::new(PROXY.into()).push(&garbage),
            Err(FrameError::Command(_))
        ));
    }
}
