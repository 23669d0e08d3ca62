//! WebSocket streams through the API server, read as upstream's conformance tests
//! read them ("should support retrieving logs from the container over websockets",
//! "should support remote command execution over websockets"), with a real node
//! (containerd) behind the server:
//!
//! - `pods/log` served by the API server itself: each subprotocol (none,
//!   `binary.k8s.io`, `base64.binary.k8s.io`) gives the exact log text and a normal
//!   close; `follow=true` delivers a line written after connecting, answers pings,
//!   and closes when the container ends; bad requests are plain errors before any
//!   upgrade (unknown subprotocol 400, missing pod 404, unknown container 400).
//! - `pods/exec` over WebSocket with `channel.k8s.io`, `base64.channel.k8s.io` and
//!   their `v4.` versions, relayed through the kubelet to containerd: stdout on
//!   channel 1, stderr on 2, v4's Status on 3; a subprotocol the runtime does not
//!   serve keeps its 403 with a message naming it.

use std::time::{Duration, Instant};

use base64::Engine;
use krust_e2e::node::TestNode;
use krust_e2e::wait_until;
use krust_e2e::websocket::{self, Answer, Socket};

const POD_TIMEOUT: Duration = Duration::from_secs(60);

/// What the log pod has written before it is told to go on.
const FIRST_LINES: &str = "container is alive\nsecond line\n";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn pod_phase(node: &TestNode, name: &str) -> String {
    let out = node
        .server
        .kubectl(["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
    text(&out.stdout)
}

/// A pod whose container `main` writes [`FIRST_LINES`], then `after connect` once
/// /tmp/go exists, then exits once /tmp/stop exists.
fn start_log_pod(node: &TestNode, name: &str) {
    let script = format!(
        "printf '{}'; until [ -f /tmp/go ]; do sleep 0.1; done; echo after connect; \
         until [ -f /tmp/stop ]; do sleep 0.1; done",
        FIRST_LINES.replace('\n', "\\n")
    );
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node_name}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {script:?}]
"#,
        node_name = node.node_name,
        image = node.image("krust/busybox:1"),
    );
    let out = node.server.kubectl_stdin(["apply", "-f", "-"], &yaml);
    assert!(out.status.success(), "apply: {}", text(&out.stderr));
    wait_until(&format!("pod {name} running"), POD_TIMEOUT, || {
        pod_phase(node, name) == "Running"
    });
    // The first lines are in the log once `kubectl logs` shows them.
    wait_until("the first log lines", POD_TIMEOUT, || {
        text(&node.server.kubectl(["logs", name]).stdout) == FIRST_LINES
    });
}

fn exec_in(node: &TestNode, pod: &str, script: &str) {
    let out = node.server.kubectl(["exec", pod, "--", "sh", "-c", script]);
    assert!(out.status.success(), "exec {script}: {}", text(&out.stderr));
}

/// How a log message becomes text.
type Decode = fn(&[u8]) -> String;

/// Reads data messages, appending them (decoded with `decode`) to `seen`, until
/// `seen` ends with `wanted`.
fn read_until(socket: &mut Socket, seen: &mut String, wanted: &str, decode: Decode) {
    while !seen.ends_with(wanted) {
        match websocket::next_message(socket) {
            Ok(Some(message)) => seen.push_str(&decode(&message)),
            Ok(None) => panic!("the log closed before {wanted:?}; it gave {seen:?}"),
            Err(error) => panic!("waiting for {wanted:?} after {seen:?}: {error:#}"),
        }
    }
}

fn refusal(node: &TestNode, path: &str, protocols: &[&str]) -> (u16, String) {
    match websocket::open(&node.server, path, protocols).expect("the server answers") {
        Answer::Refused(status, body) => (status, body),
        Answer::Open(..) => panic!("{path} with {protocols:?} was upgraded"),
    }
}

#[test]
fn pod_log_over_websocket() {
    let node = TestNode::start();
    node.wait_ready();
    let pod = "ws-logger";
    start_log_pod(&node, pod);
    let path = format!("/api/v1/namespaces/default/pods/{pod}/log?container=main");

    // Each subprotocol: the exact log, then a normal close (the log ended).
    let binary = |message: &[u8]| text(message);
    let from_base64 = |message: &[u8]| {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(message)
            .unwrap_or_else(|e| panic!("message {:?} is not base64: {e}", text(message)));
        text(&decoded)
    };
    let cases: [(&[&str], &str, Decode); 4] = [
        (&[], "", binary),
        (&["binary.k8s.io"], "binary.k8s.io", binary),
        (
            &["base64.binary.k8s.io"],
            "base64.binary.k8s.io",
            from_base64,
        ),
        // The first offer that is served wins.
        (
            &["v4.channel.k8s.io", "binary.k8s.io", "base64.binary.k8s.io"],
            "binary.k8s.io",
            binary,
        ),
    ];
    for (offers, chosen, decode) in cases {
        let started = Instant::now();
        let mut socket = websocket::open_ok(&node.server, &path, offers, chosen);
        let messages = websocket::read_to_close(&mut socket)
            .unwrap_or_else(|e| panic!("reading the log with {offers:?}: {e:#}"));
        let log: String = messages.iter().map(|m| decode(m)).collect();
        assert_eq!(log, FIRST_LINES, "the log read with {offers:?}");
        println!("log with {offers:?}: {:?}", started.elapsed());
    }

    // Bad requests are plain answers, and nothing is upgraded.
    let (status, body) = refusal(&node, &path, &["no.such.protocol"]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no.such.protocol"), "{body}");
    let (status, body) = refusal(
        &node,
        "/api/v1/namespaces/default/pods/ghost/log",
        &["binary.k8s.io"],
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains(r#"pods \"ghost\" not found"#), "{body}");
    let (status, body) = refusal(
        &node,
        &format!("/api/v1/namespaces/default/pods/{pod}/log?container=nosuch"),
        &["binary.k8s.io"],
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("container nosuch is not valid for pod ws-logger"),
        "{body}"
    );

    // follow=true: the lines so far, then one written after connecting; pings are
    // answered; the container's end closes the stream.
    let mut socket = websocket::open_ok(
        &node.server,
        &format!("{path}&follow=true"),
        &["binary.k8s.io"],
        "binary.k8s.io",
    );
    let mut seen = String::new();
    read_until(&mut socket, &mut seen, FIRST_LINES, binary);
    socket
        .send(tungstenite::Message::Ping("still there?".into()))
        .unwrap();
    match socket.read().expect("a pong") {
        tungstenite::Message::Pong(payload) => assert_eq!(&payload[..], b"still there?"),
        other => panic!("expected a pong, got {other:?}"),
    }
    let written = Instant::now();
    exec_in(&node, pod, "touch /tmp/go");
    read_until(&mut socket, &mut seen, "after connect\n", binary);
    println!(
        "followed line arrived {:?} after the write",
        written.elapsed()
    );
    assert_eq!(seen, format!("{FIRST_LINES}after connect\n"));
    let stopped = Instant::now();
    exec_in(&node, pod, "touch /tmp/stop");
    let rest = websocket::read_to_close(&mut socket).expect("a normal close");
    assert!(rest.iter().all(|m| m.is_empty()), "more log: {rest:?}");
    println!(
        "followed log closed {:?} after the container was told to stop",
        stopped.elapsed()
    );
    wait_until("the log pod succeeded", POD_TIMEOUT, || {
        pod_phase(&node, pod) == "Succeeded"
    });
}

/// A pod that runs until deleted.
fn start_sleeper(node: &TestNode, name: &str) {
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node_name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "echo container is alive; sleep 3600"]
"#,
        node_name = node.node_name,
        image = node.image("krust/busybox:1"),
    );
    let out = node.server.kubectl_stdin(["apply", "-f", "-"], &yaml);
    assert!(out.status.success(), "apply: {}", text(&out.stderr));
    wait_until(&format!("pod {name} running"), POD_TIMEOUT, || {
        pod_phase(node, name) == "Running"
    });
}

#[test]
fn exec_over_websocket_channel_protocols() {
    let node = TestNode::start();
    node.wait_ready();
    let pod = "ws-exec";
    start_sleeper(&node, pod);
    // sh -c 'echo remote execution test; echo to-err >&2'
    let path = format!(
        "/api/v1/namespaces/default/pods/{pod}/exec?container=main&stdout=1&stderr=1\
         &command=sh&command=-c&command=echo%20remote%20execution%20test%3B%20echo%20to-err%20%3E%262"
    );
    // The WebSocket subprotocols of remotecommand (v2 and v3 exist only for SPDY):
    // binary messages whose first byte is the channel, or base64 text messages whose
    // first character is the channel's digit.
    for protocol in [
        "channel.k8s.io",
        "base64.channel.k8s.io",
        "v4.channel.k8s.io",
        "v4.base64.channel.k8s.io",
    ] {
        let base64 = protocol.contains("base64");
        let started = Instant::now();
        let mut socket = websocket::open_ok(&node.server, &path, &[protocol], protocol);
        let messages = websocket::read_to_close(&mut socket)
            .unwrap_or_else(|e| panic!("reading exec output over {protocol}: {e:#}"));
        let (mut stdout, mut stderr, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for message in &messages {
            let Some((&channel, data)) = message.split_first() else {
                continue;
            };
            let (channel, data) = if base64 {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap_or_else(|e| panic!("{protocol} message {message:?}: {e}"));
                (channel.wrapping_sub(b'0'), data)
            } else {
                (channel, data.to_vec())
            };
            match channel {
                1 => stdout.extend_from_slice(&data),
                2 => stderr.extend_from_slice(&data),
                3 => errors.extend_from_slice(&data),
                other => panic!("a message on channel {other} over {protocol}: {message:?}"),
            }
        }
        assert_eq!(
            text(&stdout),
            "remote execution test\n",
            "stdout over {protocol}"
        );
        assert_eq!(text(&stderr), "to-err\n", "stderr over {protocol}");
        if protocol.starts_with("v4.") {
            // v4 ends with a metav1.Status on the error channel.
            let status: serde_json::Value = serde_json::from_slice(&errors)
                .unwrap_or_else(|e| panic!("error channel {:?}: {e}", text(&errors)));
            assert_eq!(status["status"], "Success", "{status}");
        } else {
            assert!(
                errors.is_empty(),
                "error channel over {protocol}: {}",
                text(&errors)
            );
        }
        println!("exec over {protocol}: {:?}", started.elapsed());
    }

    // A subprotocol the runtime does not serve keeps its refusal (403, so that
    // clients fall back to SPDY), with a message saying what was offered.
    let (status, body) = refusal(&node, &path, &["v2.channel.k8s.io"]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("v2.channel.k8s.io"), "{body}");

    // A missing pod is a 404 before any upgrade.
    let (status, body) = refusal(
        &node,
        "/api/v1/namespaces/default/pods/ghost/exec?command=true&stdout=1",
        &["v4.channel.k8s.io"],
    );
    assert_eq!(status, 404, "{body}");
}
