//! The cluster DNS of a real `krust server`: it publishes the `kube-system/kube-dns`
//! Service (at 10.43.0.10, no selector) and an EndpointSlice pointing at itself, and
//! answers for Services created through kubectl over UDP and TCP; a deleted Service
//! stops resolving, and garbage gets an error answer without stopping the server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use krust_e2e::{TestServer, wait_until};
use serde_json::Value;

fn query(name: &str, kind: RecordType) -> Vec<u8> {
    let mut message = Message::new(4242, MessageType::Query, hickory_proto::op::OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    message.to_vec().unwrap()
}

fn ask_udp(server: SocketAddr, packet: &[u8]) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.send_to(packet, server).unwrap();
    let mut buffer = [0u8; 4096];
    let (size, _) = socket.recv_from(&mut buffer).ok()?;
    Message::from_vec(&buffer[..size]).ok()
}

fn ask_tcp(server: SocketAddr, packet: &[u8]) -> Message {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(&(packet.len() as u16).to_be_bytes())
        .unwrap();
    stream.write_all(packet).unwrap();
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).unwrap();
    let mut answer = vec![0u8; u16::from_be_bytes(length) as usize];
    stream.read_exact(&mut answer).unwrap();
    Message::from_vec(&answer).unwrap()
}

fn a_records(message: &Message) -> Vec<String> {
    message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn json(server: &TestServer, args: &[&str]) -> Value {
    let out = server.kubectl(args);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn cluster_dns_answers_for_services() {
    let server = TestServer::start();

    // The Service and the slice that lead pods to this server.
    let mut slice = Value::Null;
    wait_until(
        "the kube-dns EndpointSlice",
        Duration::from_secs(30),
        || {
            slice = json(
                &server,
                &[
                    "get",
                    "endpointslices",
                    "-n",
                    "kube-system",
                    "-l",
                    "kubernetes.io/service-name=kube-dns",
                    "-o",
                    "json",
                ],
            )["items"][0]
                .clone();
            !slice.is_null()
        },
    );
    let service = json(
        &server,
        &[
            "get",
            "service",
            "kube-dns",
            "-n",
            "kube-system",
            "-o",
            "json",
        ],
    );
    assert_eq!(service["spec"]["clusterIP"], "10.43.0.10");
    assert!(service["spec"]["selector"].is_null());
    assert_eq!(service["metadata"]["labels"]["k8s-app"], "kube-dns");
    let port = slice["ports"][0]["port"].as_u64().unwrap() as u16;
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port);
    let address: SocketAddr = format!(
        "{}:{port}",
        slice["endpoints"][0]["addresses"][0].as_str().unwrap()
    )
    .parse()
    .unwrap();

    // kube-dns itself resolves, over UDP and TCP.
    let name = "kube-dns.kube-system.svc.cluster.local.";
    wait_until("kube-dns resolves", Duration::from_secs(30), || {
        ask_udp(address, &query(name, RecordType::A))
            .is_some_and(|m| a_records(&m) == ["10.43.0.10"])
    });
    assert_eq!(
        a_records(&ask_tcp(address, &query(name, RecordType::A))),
        ["10.43.0.10"]
    );

    // A Service made with kubectl appears, with SRV for its named port.
    let out = server.kubectl(["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cluster_ip = json(&server, &["get", "service", "web", "-o", "json"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let web = "web.default.svc.cluster.local.";
    wait_until("web resolves", Duration::from_secs(10), || {
        ask_udp(address, &query(web, RecordType::A))
            .is_some_and(|m| a_records(&m) == [cluster_ip.clone()])
    });
    let srv = ask_udp(
        address,
        &query(
            "_80-8080._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        ),
    )
    .unwrap();
    assert_eq!(srv.metadata.response_code, ResponseCode::NoError);
    assert_eq!(srv.answers.len(), 1, "{srv:?}");

    // Unknown names in the zone are NXDOMAIN; garbage gets an error and serving goes on.
    let missing = ask_udp(
        address,
        &query("nosuch.default.svc.cluster.local.", RecordType::A),
    )
    .unwrap();
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    if let Some(answer) = ask_udp(address, &[0x12, 0x34, 0xff, 0x00, 0x01]) {
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    }
    assert_eq!(
        a_records(&ask_udp(address, &query(web, RecordType::A)).unwrap()),
        std::slice::from_ref(&cluster_ip)
    );

    // A deleted Service stops resolving.
    let out = server.kubectl(["delete", "service", "web"]);
    assert!(out.status.success());
    wait_until("web is gone from DNS", Duration::from_secs(10), || {
        ask_udp(address, &query(web, RecordType::A))
            .is_some_and(|m| m.metadata.response_code == ResponseCode::NXDomain)
    });
}
