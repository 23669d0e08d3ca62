//! WebSocket connections to a [`TestServer`] as its admin (client certificate, the
//! cluster CA), with tungstenite's blocking client: for `pods/log` and `pods/exec`
//! over WebSocket, read the way upstream's conformance tests read them.

use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

use crate::TestServer;

/// An open WebSocket to the server.
pub type Socket = tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// How long one read may wait before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server answered to a WebSocket handshake.
pub enum Answer {
    /// Switched: the socket and the subprotocol the server chose (`""` for none).
    Open(Box<Socket>, String),
    /// Refused with this HTTP status and body.
    Refused(u16, String),
}

/// Opens `path` (with its query) as a WebSocket, offering `protocols` in order
/// (none: no `Sec-WebSocket-Protocol` header).
pub fn open(server: &TestServer, path: &str, protocols: &[&str]) -> Result<Answer> {
    let (tls, authority) = crate::tls_connect(&server.kubeconfig_path(), true, READ_TIMEOUT)?;
    let mut request = format!("wss://{authority}{path}").into_client_request()?;
    if !protocols.is_empty() {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols.join(", ").parse()?);
    }
    match tungstenite::client::client(request, tls) {
        Ok((socket, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|value| value.to_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            Ok(Answer::Open(Box::new(socket), protocol))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let body = response
                .body()
                .as_deref()
                .map(|body| String::from_utf8_lossy(body).to_string())
                .unwrap_or_default();
            Ok(Answer::Refused(response.status().as_u16(), body))
        }
        Err(error) => Err(anyhow::anyhow!("the WebSocket handshake failed: {error}")),
    }
}

/// Opens `path` and expects the server to switch, choosing `expected` among `protocols`.
pub fn open_ok(server: &TestServer, path: &str, protocols: &[&str], expected: &str) -> Socket {
    match open(server, path, protocols).unwrap_or_else(|error| panic!("{path}: {error:#}")) {
        Answer::Open(socket, chosen) => {
            assert_eq!(chosen, expected, "the subprotocol chosen for {protocols:?}");
            *socket
        }
        Answer::Refused(status, body) => panic!("{path} refused the upgrade: {status} {body}"),
    }
}

/// The next data message (binary, or text as its bytes), answering nothing
/// else; `None` once the server closed normally.
pub fn next_message(socket: &mut Socket) -> Result<Option<Vec<u8>>> {
    loop {
        match socket.read() {
            Ok(Message::Binary(data)) => return Ok(Some(data.to_vec())),
            Ok(Message::Text(text)) => return Ok(Some(text.as_bytes().to_vec())),
            Ok(Message::Close(frame)) => {
                if let Some(frame) = &frame
                    && frame.code != tungstenite::protocol::frame::coding::CloseCode::Normal
                {
                    bail!("the server closed with {frame}");
                }
                // Reading on sends our answer to the close.
                while socket.read().is_ok() {}
                return Ok(None);
            }
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => return Ok(None),
            Err(error) => return Err(error).context("reading the WebSocket"),
        }
    }
}

/// Every data message until the server closes.
pub fn read_to_close(socket: &mut Socket) -> Result<Vec<Vec<u8>>> {
    let mut messages = Vec::new();
    while let Some(message) = next_message(socket)? {
        messages.push(message);
    }
    Ok(messages)
}
