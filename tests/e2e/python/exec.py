"""Exec through the official Kubernetes Python client (WebSocket, channel.k8s.io).

Run by tests/e2e/tests/streaming.rs with KUBECONFIG pointing at a krust server and
POD naming a running pod in the default namespace. Prints "ok" when every step held.
"""
import os
import sys

from kubernetes import client, config
from kubernetes.stream import stream

config.load_kube_config(os.environ["KUBECONFIG"])
core = client.CoreV1Api()
pod = os.environ["POD"]

# Output of a command, all at once.
output = stream(core.connect_get_namespaced_pod_exec, pod, "default",
                command=["sh", "-c", "echo from-python"],
                stderr=True, stdin=False, stdout=True, tty=False)
if output.strip() != "from-python":
    sys.exit(f"exec printed {output!r}")

# An interactive session: stdin in, stdout out, the exit code at the end.
session = stream(core.connect_get_namespaced_pod_exec, pod, "default",
                 command=["sh", "-c", "read x; echo got-$x; exit 3"],
                 stderr=True, stdin=True, stdout=True, tty=False,
                 _preload_content=False)
session.write_stdin("line\n")
seen = ""
while session.is_open() and "got-line" not in seen:
    session.update(timeout=5)
    seen += session.read_stdout()
session.run_forever(timeout=10)
if "got-line" not in seen:
    sys.exit(f"interactive exec printed {seen!r}")
if session.returncode != 3:
    sys.exit(f"exit code {session.returncode}, not 3")
print("ok")
