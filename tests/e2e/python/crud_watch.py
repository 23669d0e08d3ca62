"""CRUD and watch through the official Kubernetes Python client.

Run by tests/e2e/tests/clients.rs with KUBECONFIG pointing at a krust server and
NAMESPACE naming a fresh namespace. Prints "ok" when every step held.
"""
import os
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(os.environ["KUBECONFIG"])
namespace = os.environ["NAMESPACE"]
core = client.CoreV1Api()
apps = client.AppsV1Api()

core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))

# Watch from the namespace's current resourceVersion in a thread.
start_rv = core.list_namespaced_config_map(namespace).metadata.resource_version
events = []
done = threading.Event()


def follow():
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, namespace,
                          resource_version=start_rv, timeout_seconds=20):
        events.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            w.stop()
    done.set()


thread = threading.Thread(target=follow, daemon=True)
thread.start()

body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"from": "python"}),
                          data={"a": "1"})
created = core.create_namespaced_config_map(namespace, body)
assert created.metadata.uid, "created object has a uid"

read = core.read_namespaced_config_map("py", namespace)
assert read.data == {"a": "1"}, read.data

read.data["b"] = "2"
replaced = core.replace_namespaced_config_map("py", namespace, read)
assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)

# A stale update is refused with 409.
stale = read
stale.metadata.resource_version = created.metadata.resource_version
try:
    core.replace_namespaced_config_map("py", namespace, stale)
    sys.exit("a stale update was accepted")
except ApiException as error:
    assert error.status == 409, error.status

patched = core.patch_namespaced_config_map("py", namespace, {"data": {"c": "3"}})
assert patched.data == {"a": "1", "b": "2", "c": "3"}, patched.data

listed = core.list_namespaced_config_map(namespace, label_selector="from=python")
assert [item.metadata.name for item in listed.items] == ["py"]

deployment = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="pyweb"),
    spec=client.V1DeploymentSpec(
        replicas=1,
        selector=client.V1LabelSelector(match_labels={"app": "pyweb"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "pyweb"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))))
apps.create_namespaced_deployment(namespace, deployment)
scale = apps.read_namespaced_deployment_scale("pyweb", namespace)
assert scale.spec.replicas == 1
apps.patch_namespaced_deployment_scale("pyweb", namespace, {"spec": {"replicas": 4}})
assert apps.read_namespaced_deployment("pyweb", namespace).spec.replicas == 4

try:
    core.read_namespaced_config_map("absent", namespace)
    sys.exit("reading an absent object succeeded")
except ApiException as error:
    assert error.status == 404, error.status

core.delete_namespaced_config_map("py", namespace)
done.wait(20)
kinds = [kind for kind, name in events if name == "py"]
assert kinds == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"], events
print("ok")
