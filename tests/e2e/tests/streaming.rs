//! Streaming into running pods through the API server and the node agent, with the
//! real kubectl and the real containerd: `kubectl exec` (stdout, stderr, stdin, exit
//! codes), `kubectl cp` both ways, `kubectl attach`, `kubectl port-forward`, and the
//! Python client's WebSocket exec; bad requests get clear errors. kubectl asks for
//! WebSocket first and falls back to SPDY when the runtime refuses it, so both
//! upgrade paths run.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::time::Duration;

use krust_e2e::node::TestNode;
use krust_e2e::wait_until;

const POD_TIMEOUT: Duration = Duration::from_secs(60);

/// A running pod on the node with one container `main` running `script`, and
/// `stdin` kept open for attach when asked.
fn start_pod(node: &TestNode, name: &str, script: &str, stdin: bool) {
    node.server.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node_name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {script:?}]
    stdin: {stdin}
    stdinOnce: {stdin}
"#,
        node_name = node.node_name,
        image = node.image("krust/busybox:1"),
    ));
    wait_until(&format!("pod {name} running"), POD_TIMEOUT, || {
        let out = node
            .server
            .kubectl(["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
        String::from_utf8_lossy(&out.stdout) == "Running"
    });
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// Kills a child process when dropped (a port-forward or attach that runs until stopped).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exec_cp_attach_and_port_forward() {
    let node = TestNode::start();
    node.wait_ready();
    start_pod(
        &node,
        "shell",
        "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 8080 -h /www",
        false,
    );

    // stdout and stderr come back on their own streams.
    let out = node.server.kubectl([
        "exec",
        "shell",
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2",
    ]);
    assert!(out.status.success(), "exec: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to-out\n");
    assert!(
        text(&out.stderr).contains("to-err"),
        "{}",
        text(&out.stderr)
    );

    // The command's exit code becomes kubectl's.
    let out = node
        .server
        .kubectl(["exec", "shell", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));

    // stdin reaches the command, and its end closes the command's input.
    let out = node
        .server
        .kubectl_stdin(["exec", "-i", "shell", "--", "sh", "-c", "wc -c"], "12345");
    assert!(out.status.success(), "exec -i: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "5");

    // kubectl cp in both directions (tar through exec).
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("upload.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    let out = node.server.kubectl([
        "cp",
        local.to_str().unwrap(),
        "shell:/tmp/upload.txt",
        "-c",
        "main",
    ]);
    assert!(out.status.success(), "cp in: {}", text(&out.stderr));
    let out = node
        .server
        .kubectl(["exec", "shell", "--", "cat", "/tmp/upload.txt"]);
    assert_eq!(text(&out.stdout), "copied in\n");
    let back = dir.path().join("download.txt");
    let out = node.server.kubectl([
        "cp",
        "shell:/tmp/upload.txt",
        back.to_str().unwrap(),
        "-c",
        "main",
    ]);
    assert!(out.status.success(), "cp out: {}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");

    // port-forward: a local port reaches the pod's port 8080.
    let mut forward = Killed(
        node.server
            .kubectl_command(["port-forward", "pod/shell", ":8080"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl port-forward starts"),
    );
    let mut first_line = String::new();
    BufReader::new(forward.0.stdout.as_mut().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let local_port: u16 = first_line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("port-forward printed {first_line:?}"));
    for _ in 0..2 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", local_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.") && answer.contains("served"),
            "through port-forward: {answer:?}"
        );
    }
    drop(forward);

    // attach: the container's own stdin and stdout.
    start_pod(
        &node,
        "reader",
        "read line; echo got:$line; sleep 3600",
        true,
    );
    let mut attach = Killed(
        node.server
            .kubectl_command(["attach", "-i", "reader", "-c", "main"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl attach starts"),
    );
    // Keep writing until the line arrives: attach may connect after the first write.
    let mut stdin = attach.0.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..100 {
            if stdin.write_all(b"hello\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let mut reader = BufReader::new(attach.0.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim().is_empty() {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
    }
    assert_eq!(line.trim(), "got:hello", "kubectl attach printed {line:?}");
    drop(attach);
    let _ = writer.join();

    // Bad input: clear errors, nothing started.
    let out = node
        .server
        .kubectl(["exec", "shell", "-c", "nosuch", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("container nosuch is not valid for pod shell"),
        "{}",
        text(&out.stderr)
    );
    let out = node.server.kubectl(["exec", "ghost", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pods \"ghost\" not found"),
        "{}",
        text(&out.stderr)
    );
    let out = node
        .server
        .kubectl(["exec", "shell", "--", "/no/such/binary"]);
    assert!(!out.status.success(), "a missing binary cannot succeed");
    // The pod kept serving through all of it.
    let out = node
        .server
        .kubectl(["exec", "shell", "--", "cat", "/www/index.html"]);
    assert_eq!(text(&out.stdout), "served\n");

    // The Python client's exec speaks WebSocket (channel.k8s.io) end to end.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/exec.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .env("KUBECONFIG", node.server.kubeconfig_path())
        .env("POD", "shell")
        .output()
        .expect("python3 runs");
    let stdout = text(&output.stdout);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "the Python exec test failed:\n{stdout}\n{}",
        text(&output.stderr)
    );
}
