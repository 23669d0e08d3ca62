//! Read-only byte streams served over WebSocket by the API server itself, as
//! kube-apiserver's `wsstream.Reader` does for `pods/log` (clients such as the
//! conformance tests and web consoles read logs this way).
//!
//! - [`is_websocket_request`]: `Connection: Upgrade` with `Upgrade: websocket`.
//! - [`Handshake::from_headers`] checks the RFC 6455 handshake and picks the first
//!   subprotocol the client offers among `""` (no `Sec-WebSocket-Protocol` header:
//!   binary frames), `binary.k8s.io` (binary frames) and `base64.binary.k8s.io` (text
//!   frames, each chunk in standard base64). Any other offer is a 400, before anything
//!   is upgraded.
//! - [`Handshake::stream`] answers `101 Switching Protocols` and, once the connection
//!   has switched, sends every chunk of a [`ByteStream`] as one message; when the
//!   stream ends it sends a close frame (normal closure). The client's frames are read
//!   meanwhile: pings are answered with pongs (by tungstenite), a close (or a dropped
//!   connection) stops the stream, and anything else is ignored, as upstream does.
//!
//! The framing is tokio-tungstenite's; only the HTTP side of the handshake is here,
//! since hyper (not tungstenite) owns the connection until the upgrade.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::errors::{ApiError, ApiResult};
use crate::server::Body;

/// A body delivered as it comes, one chunk per message.
pub type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = Bytes> + Send + Sync>>;

/// How each chunk goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// A binary message holding the chunk's bytes.
    Binary,
    /// A text message holding the chunk in standard base64 (for clients, such as
    /// browsers of old, that cannot read binary messages).
    Base64,
}

/// The subprotocols served, by name; `""` stands for a client that offered none.
const PROTOCOLS: [(&str, Encoding); 3] = [
    ("", Encoding::Binary),
    ("binary.k8s.io", Encoding::Binary),
    ("base64.binary.k8s.io", Encoding::Base64),
];

/// How long to wait for the client's close frame after ours before dropping the
/// connection.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Whether a request asks to switch to WebSocket: a `Connection` header with the
/// `upgrade` token and `Upgrade: websocket` (case-insensitive), as upstream's
/// `wsstream.IsWebSocketRequest`.
pub fn is_websocket_request(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade_websocket = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"));
    connection_upgrade && upgrade_websocket
}

/// A valid WebSocket handshake of a client, with the subprotocol chosen for it.
#[derive(Debug)]
pub struct Handshake {
    accept_key: String,
    protocol: &'static str,
    encoding: Encoding,
}

impl Handshake {
    /// Checks the client's side of the handshake (version 13, a key) and picks the
    /// first subprotocol it offers that is served. A 400 says what is wrong.
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Handshake> {
        let version = headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if version.trim() != "13" {
            return Err(ApiError::bad_request(format!(
                "unsupported WebSocket version {version:?}: only version 13 (RFC 6455) is served"
            )));
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|value| value.as_bytes())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("the WebSocket handshake has no Sec-WebSocket-Key header")
            })?;
        let offers: Vec<&str> = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|offer| !offer.is_empty())
            .collect();
        let (protocol, encoding) = if offers.is_empty() {
            PROTOCOLS[0]
        } else {
            offers
                .iter()
                .find_map(|offer| PROTOCOLS.iter().find(|(name, _)| name == offer).copied())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "requested WebSocket subprotocol(s) {offers:?} are not supported; \
                         offer binary.k8s.io or base64.binary.k8s.io, or none for binary frames"
                    ))
                })?
        };
        Ok(Handshake {
            accept_key: tokio_tungstenite::tungstenite::handshake::derive_accept_key(key),
            protocol,
            encoding,
        })
    }

    /// The subprotocol chosen (`""` when the client offered none).
    pub fn protocol(&self) -> &'static str {
        self.protocol
    }

    /// The `101 Switching Protocols` answer; once hyper has switched the connection
    /// (`upgrade`), `body` is sent over it as messages, then a close frame.
    pub fn stream(self, upgrade: hyper::upgrade::OnUpgrade, body: ByteStream) -> Response<Body> {
        let encoding = self.encoding;
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else {
                return;
            };
            let socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            send_stream(socket, body, encoding).await;
        });
        let mut answer = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, self.accept_key);
        if !self.protocol.is_empty() {
            answer = answer.header(header::SEC_WEBSOCKET_PROTOCOL, self.protocol);
        }
        answer
            .body(BodyExt::boxed(http_body_util::Empty::new()))
            .expect("static headers are valid")
    }
}

/// The message carrying one chunk.
fn message(chunk: Bytes, encoding: Encoding) -> Message {
    use base64::Engine;
    match encoding {
        Encoding::Binary => Message::Binary(chunk),
        Encoding::Base64 => Message::text(base64::engine::general_purpose::STANDARD.encode(chunk)),
    }
}

/// Sends `body` over an open WebSocket until it ends (then a normal close) or the
/// client goes (a close frame, an error, the connection gone).
async fn send_stream<S>(socket: WebSocketStream<S>, mut body: ByteStream, encoding: Encoding)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            chunk = body.next() => match chunk {
                Some(chunk) if chunk.is_empty() => {}
                Some(chunk) => {
                    if sink.send(message(chunk, encoding)).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            frame = incoming.next() => match frame {
                // tungstenite queues the reply to a close; flushing sends it.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    let _ = sink.flush().await;
                    return;
                }
                // Pings are answered by tungstenite while reading; data is ignored.
                Some(Ok(_)) => {}
            },
        }
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if sink.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    // Let the client answer our close before the connection goes.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = incoming.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn handshake_with(protocols: &[&str]) -> ApiResult<Handshake> {
        let mut pairs = vec![
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        for protocol in protocols {
            pairs.push(("sec-websocket-protocol", protocol));
        }
        Handshake::from_headers(&headers(&pairs))
    }

    #[test]
    fn recognizes_upgrade_requests() {
        assert!(is_websocket_request(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ])));
        assert!(!is_websocket_request(&headers(&[("upgrade", "websocket")])));
        assert!(!is_websocket_request(&headers(&[
            ("connection", "upgrade"),
            ("upgrade", "SPDY/3.1"),
        ])));
        assert!(!is_websocket_request(&headers(&[
            ("connection", "upgraded"),
            ("upgrade", "websocket"),
        ])));
    }

    #[test]
    fn picks_the_first_served_subprotocol() {
        let none = handshake_with(&[]).unwrap();
        assert_eq!((none.protocol(), none.encoding), ("", Encoding::Binary));
        // The RFC 6455 example key.
        assert_eq!(none.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let binary = handshake_with(&["foo, binary.k8s.io", "base64.binary.k8s.io"]).unwrap();
        assert_eq!(binary.protocol(), "binary.k8s.io");
        let base64 = handshake_with(&["base64.binary.k8s.io", "binary.k8s.io"]).unwrap();
        assert_eq!(
            (base64.protocol(), base64.encoding),
            ("base64.binary.k8s.io", Encoding::Base64)
        );
    }

    #[test]
    fn refuses_bad_handshakes() {
        let error = handshake_with(&["v4.channel.k8s.io"]).unwrap_err();
        let text = format!("{error:?}");
        assert!(
            text.contains("400") || text.contains("BadRequest"),
            "{text}"
        );
        assert!(text.contains("v4.channel.k8s.io"), "{text}");
        let old = Handshake::from_headers(&headers(&[
            ("sec-websocket-version", "8"),
            ("sec-websocket-key", "x"),
        ]));
        assert!(format!("{:?}", old.unwrap_err()).contains("version 13"));
        let keyless = Handshake::from_headers(&headers(&[("sec-websocket-version", "13")]));
        assert!(format!("{:?}", keyless.unwrap_err()).contains("Sec-WebSocket-Key"));
    }

    /// A server running `send_stream` and a tungstenite client, joined by a pipe.
    async fn pair(
        body: ByteStream,
        encoding: Encoding,
    ) -> (
        WebSocketStream<tokio::io::DuplexStream>,
        tokio::task::JoinHandle<()>,
    ) {
        let (server_end, client_end) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let socket = WebSocketStream::from_raw_socket(server_end, Role::Server, None).await;
            send_stream(socket, body, encoding).await;
        });
        let client = WebSocketStream::from_raw_socket(client_end, Role::Client, None).await;
        (client, server)
    }

    /// Every message until the server's close frame, whose code is returned too.
    async fn read_all(
        client: &mut WebSocketStream<tokio::io::DuplexStream>,
    ) -> (Vec<Message>, CloseCode) {
        let mut messages = Vec::new();
        loop {
            match client
                .next()
                .await
                .expect("the server closes with a close frame")
            {
                Ok(Message::Close(frame)) => {
                    // Reading on sends our answer to the close; then the stream ends.
                    while let Some(Ok(_)) = client.next().await {}
                    return (messages, frame.expect("a close code").code);
                }
                Ok(other) => messages.push(other),
                Err(error) => panic!("the connection failed: {error}"),
            }
        }
    }

    #[tokio::test]
    async fn sends_chunks_then_closes() {
        let chunks = vec![Bytes::from("one\n"), Bytes::new(), Bytes::from("two\n")];
        let (mut client, server) =
            pair(Box::pin(futures::stream::iter(chunks)), Encoding::Binary).await;
        let (messages, code) = read_all(&mut client).await;
        assert_eq!(
            messages,
            vec![Message::binary("one\n"), Message::binary("two\n")]
        );
        assert_eq!(code, CloseCode::Normal);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn base64_sends_text() {
        let chunks = vec![Bytes::from_static(b"\x00\xffhi\n")];
        let (mut client, server) =
            pair(Box::pin(futures::stream::iter(chunks)), Encoding::Base64).await;
        let (messages, _) = read_all(&mut client).await;
        assert_eq!(messages, vec![Message::text("AP9oaQo=")]);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn answers_pings_and_stops_on_close() {
        // A body that never ends, as a followed log of a quiet container.
        let (mut client, server) =
            pair(Box::pin(futures::stream::pending()), Encoding::Binary).await;
        client
            .send(Message::Ping("are you there".into()))
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("a pong in time")
            .unwrap()
            .unwrap();
        assert_eq!(answer, Message::Pong("are you there".into()));
        client.close(None).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops when the client closes")
            .unwrap();
    }
}
