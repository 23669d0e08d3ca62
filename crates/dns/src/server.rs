//! Serving DNS over UDP and TCP: decodes a request, answers it from the latest
//! [`Index`] or forwards it upstream, and encodes the response.
//!
//! Cluster answers are computed on the receiving task (a hash probe); only
//! forwarded questions get a task of their own, so a slow upstream never holds up
//! cluster names. Bad input gets FORMERR (or is dropped when it is too short to
//! carry an ID) and the server goes on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::Name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::forward::{self, Transport};
use crate::index::{Index, Outcome};

/// The largest UDP answer without EDNS (RFC 1035).
const CLASSIC_UDP_SIZE: usize = 512;
/// The UDP payload we announce and accept in EDNS (the DNS flag day's value).
const EDNS_UDP_SIZE: u16 = 1232;
/// How long a TCP connection may stay idle between requests.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared state of the DNS server: the current index and the upstreams.
pub struct Resolver {
    index: ArcSwap<Index>,
    /// False until the first full sync with the API: cluster names get SERVFAIL
    /// rather than a wrong NXDOMAIN while the index is still empty.
    synced: AtomicBool,
    upstreams: Vec<SocketAddr>,
}

/// What to do with one request.
enum Step {
    Reply(Vec<u8>),
    /// Too short to answer (no ID), or not a query: say nothing.
    Drop,
    /// Ask the upstreams this very request.
    Forward(Vec<u8>),
    /// An answer ending on a CNAME outside the zone: add the upstream's answer for it.
    Chase {
        response: Box<Message>,
        target: Name,
        max_size: usize,
    },
}

impl Resolver {
    pub fn new(zone: &Name, upstreams: Vec<SocketAddr>) -> Resolver {
        Resolver {
            index: ArcSwap::from_pointee(Index::empty(zone)),
            synced: AtomicBool::new(false),
            upstreams,
        }
    }

    /// Replaces the index; later lookups see the new one, running ones finish on the old.
    pub fn publish(&self, index: Index) {
        self.index.store(Arc::new(index));
        self.synced.store(true, Ordering::Release);
    }

    /// Answers one request (wire format); None: send nothing back.
    pub async fn handle(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        match self.step(request, transport) {
            Step::Reply(reply) => Some(reply),
            Step::Drop => None,
            step => Some(self.finish(step, transport).await),
        }
    }

    fn step(&self, request: &[u8], transport: Transport) -> Step {
        if request.len() < 12 {
            return Step::Drop;
        }
        let id = u16::from_be_bytes([request[0], request[1]]);
        let message = match Message::from_vec(request) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, "undecodable DNS request");
                // A response to a response would start a loop: answer queries only.
                if request[2] & 0x80 != 0 {
                    return Step::Drop;
                }
                return Step::Reply(error_reply(id, OpCode::Query, ResponseCode::FormErr));
            }
        };
        if message.metadata.message_type != MessageType::Query {
            return Step::Drop;
        }
        if message.metadata.op_code != OpCode::Query {
            return Step::Reply(error_reply(
                id,
                message.metadata.op_code,
                ResponseCode::NotImp,
            ));
        }
        let [query] = message.queries.as_slice() else {
            return Step::Reply(error_reply(id, OpCode::Query, ResponseCode::FormErr));
        };
        let index = self.index.load();
        let outcome = index.answer(query);
        let max_size = match transport {
            Transport::Tcp => u16::MAX as usize,
            Transport::Udp => message
                .edns
                .as_ref()
                .map(|e| (e.max_payload().min(EDNS_UDP_SIZE) as usize).max(CLASSIC_UDP_SIZE))
                .unwrap_or(CLASSIC_UDP_SIZE),
        };
        let external = outcome.external_target(index.zone());
        let Outcome::Answer {
            code,
            answers,
            authorities,
            additionals,
        } = outcome
        else {
            return Step::Forward(request.to_vec());
        };
        let mut response = Message::response(id, OpCode::Query);
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = message.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.response_code = if self.synced.load(Ordering::Acquire) {
            code
        } else {
            ResponseCode::ServFail
        };
        response.add_query(query.clone());
        if response.metadata.response_code != ResponseCode::ServFail {
            response.add_answers(answers);
            response.add_authorities(authorities);
            response.add_additionals(additionals);
        }
        if message.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_UDP_SIZE);
            response.set_edns(edns);
        }
        match external {
            Some(target) => Step::Chase {
                response: Box::new(response),
                target,
                max_size,
            },
            None => Step::Reply(encode(&response, max_size)),
        }
    }

    async fn finish(&self, step: Step, transport: Transport) -> Vec<u8> {
        match step {
            Step::Forward(request) => {
                match forward::forward(&self.upstreams, &request, transport).await {
                    Ok(reply) => reply,
                    Err(error) => {
                        tracing::debug!(%error, "forwarding failed");
                        let id = u16::from_be_bytes([request[0], request[1]]);
                        error_reply(id, OpCode::Query, ResponseCode::ServFail)
                    }
                }
            }
            Step::Chase {
                mut response,
                target,
                max_size,
            } => {
                let qtype = response.queries[0].query_type;
                let mut query = Message::query();
                query.metadata.recursion_desired = true;
                query.add_query(Query::query(target, qtype));
                let upstream = match query.to_vec() {
                    Ok(bytes) => forward::forward(&self.upstreams, &bytes, transport).await,
                    Err(error) => Err(error.into()),
                };
                match upstream.and_then(|bytes| Ok(Message::from_vec(&bytes)?)) {
                    Ok(mut answer) => response.add_answers(answer.answers.drain(..)),
                    Err(error) => {
                        tracing::debug!(%error, "resolving an ExternalName target failed");
                        &mut response
                    }
                };
                encode(&response, max_size)
            }
            Step::Reply(reply) => reply,
            Step::Drop => Vec::new(),
        }
    }
}

/// The wire form of a response; truncated (TC set, records dropped) when it does
/// not fit the client's UDP size.
fn encode(response: &Message, max_size: usize) -> Vec<u8> {
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= max_size => bytes,
        Ok(_) => response.truncate().to_vec().unwrap_or_default(),
        Err(error) => {
            tracing::warn!(%error, "cannot encode a DNS response");
            error_reply(response.metadata.id, OpCode::Query, ResponseCode::ServFail)
        }
    }
}

fn error_reply(id: u16, op_code: OpCode, code: ResponseCode) -> Vec<u8> {
    Message::error_msg(id, op_code, code)
        .to_vec()
        .expect("a header-only message encodes")
}

/// Serves UDP on `socket` until the task is dropped.
pub async fn serve_udp(resolver: Arc<Resolver>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let mut buffer = vec![0u8; 65535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors of earlier sends surface here on Linux; nothing is lost.
                tracing::debug!(%error, "DNS UDP receive error");
                continue;
            }
        };
        match resolver.step(&buffer[..len], Transport::Udp) {
            Step::Reply(reply) => {
                let _ = socket.send_to(&reply, peer).await;
            }
            Step::Drop => {}
            step => {
                let resolver = resolver.clone();
                let socket = socket.clone();
                tokio::spawn(async move {
                    let reply = resolver.finish(step, Transport::Udp).await;
                    let _ = socket.send_to(&reply, peer).await;
                });
            }
        }
    }
}

/// Serves TCP on `listener` until the task is dropped: a task per connection,
/// length-prefixed messages (RFC 1035 4.2.2), several per connection.
pub async fn serve_tcp(resolver: Arc<Resolver>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let resolver = resolver.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_connection(&resolver, stream).await {
                tracing::debug!(%error, "DNS TCP connection ended");
            }
        });
    }
}

async fn serve_connection(resolver: &Resolver, mut stream: TcpStream) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(error)) => return Err(error),
            Err(_) => return Ok(()),
        };
        let mut request = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut request))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let Some(reply) = resolver.handle(&request, Transport::Tcp).await else {
            return Ok(());
        };
        let reply_len = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        stream.write_all(&reply_len.to_be_bytes()).await?;
        stream.write_all(&reply[..reply_len as usize]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RecordType;

    fn resolver() -> Resolver {
        let resolver = Resolver::new(&Name::from_ascii("cluster.local.").unwrap(), Vec::new());
        resolver.publish(Index::empty(&Name::from_ascii("cluster.local.").unwrap()));
        resolver
    }

    fn request(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 4242;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        message.to_vec().unwrap()
    }

    async fn ask(resolver: &Resolver, bytes: &[u8]) -> Message {
        Message::from_vec(&resolver.handle(bytes, Transport::Udp).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn answers_carry_the_id_the_question_and_the_authoritative_flag() {
        let reply = ask(
            &resolver(),
            &request("dns-version.cluster.local.", RecordType::TXT),
        )
        .await;
        assert_eq!(reply.metadata.id, 4242);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert!(reply.metadata.authoritative);
        assert_eq!(reply.queries.len(), 1);
        assert_eq!(reply.answers.len(), 1);
    }

    #[tokio::test]
    async fn cluster_names_are_servfail_until_the_first_sync() {
        let resolver = Resolver::new(&Name::from_ascii("cluster.local.").unwrap(), Vec::new());
        let reply = ask(&resolver, &request("x.svc.cluster.local.", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn bad_requests_get_formerr_notimp_or_nothing() {
        let resolver = resolver();
        // Too short for an ID: dropped.
        assert_eq!(resolver.handle(&[1, 2, 3], Transport::Udp).await, None);
        // A header promising a question that is not there.
        let mut garbage = request("a.cluster.local.", RecordType::A);
        garbage.truncate(14);
        let reply = ask(&resolver, &garbage).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply.metadata.id, 4242);
        // Two questions.
        let mut two = Message::query();
        two.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
        two.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
        let reply = ask(&resolver, &two.to_vec().unwrap()).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        // Another opcode.
        let mut notify = Message::new(7, MessageType::Query, OpCode::Notify);
        notify.add_query(Query::query(
            Name::from_ascii("a.").unwrap(),
            RecordType::SOA,
        ));
        let reply = ask(&resolver, &notify.to_vec().unwrap()).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
        // A response is never answered.
        let response = Message::response(9, OpCode::Query).to_vec().unwrap();
        assert_eq!(resolver.handle(&response, Transport::Udp).await, None);
    }

    #[tokio::test]
    async fn without_upstreams_forwarded_names_get_servfail() {
        let reply = ask(&resolver(), &request("example.com.", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(reply.metadata.id, 4242);
    }

    /// Serves `resolver` on UDP and TCP at one free port of 127.0.0.1.
    async fn serve(resolver: Resolver) -> SocketAddr {
        let resolver = Arc::new(resolver);
        let (udp, tcp) = crate::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = udp.local_addr().unwrap();
        tokio::spawn(serve_udp(resolver.clone(), udp));
        tokio::spawn(serve_tcp(resolver, tcp));
        addr
    }

    #[tokio::test]
    async fn serves_udp_and_tcp_and_forwards_other_names_upstream() {
        // The upstream: a second instance, authoritative for example.com.
        let upstream_zone = Name::from_ascii("example.com.").unwrap();
        let upstream = Resolver::new(&upstream_zone, Vec::new());
        upstream.publish(Index::empty(&upstream_zone));
        let upstream = serve(upstream).await;
        let zone = Name::from_ascii("cluster.local.").unwrap();
        let cluster = Resolver::new(&zone, vec![upstream]);
        cluster.publish(Index::empty(&zone));
        let server = serve(cluster).await;

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buffer = vec![0u8; 4096];
        for (name, qtype) in [
            ("cluster.local.", RecordType::SOA),
            ("example.com.", RecordType::SOA),
        ] {
            client.send_to(&request(name, qtype), server).await.unwrap();
            let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
                .await
                .unwrap()
                .unwrap();
            let reply = Message::from_vec(&buffer[..len]).unwrap();
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::NoError,
                "{name}"
            );
            assert_eq!(reply.answers.len(), 1, "{name}");
            assert_eq!(reply.answers[0].name.to_ascii(), name);
        }
        // Garbage gets FORMERR and the server goes on serving.
        client
            .send_to(
                &[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'f', b'o'],
                server,
            )
            .await
            .unwrap();
        let len = client.recv(&mut buffer).await.unwrap();
        assert_eq!(
            Message::from_vec(&buffer[..len])
                .unwrap()
                .metadata
                .response_code,
            ResponseCode::FormErr
        );

        // TCP, forwarded over TCP, two requests on one connection.
        let mut stream = TcpStream::connect(server).await.unwrap();
        for name in ["example.com.", "dns-version.cluster.local."] {
            let bytes = request(
                name,
                if name.starts_with("dns") {
                    RecordType::TXT
                } else {
                    RecordType::SOA
                },
            );
            stream
                .write_all(&(bytes.len() as u16).to_be_bytes())
                .await
                .unwrap();
            stream.write_all(&bytes).await.unwrap();
            let len = stream.read_u16().await.unwrap() as usize;
            let mut reply = vec![0u8; len];
            stream.read_exact(&mut reply).await.unwrap();
            let reply = Message::from_vec(&reply).unwrap();
            assert_eq!(reply.answers.len(), 1, "{name}");
        }
    }
}
