//! The pod workers: one task per pod bound to this node, each moving the runtime's
//! state towards the pod's spec and reporting it through `pods/status`.
//!
//! Level-triggered, as upstream's kubelet: a watch on the node's pods (field selector
//! `spec.nodeName`) feeds a cache and wakes the pod's worker; the worker also wakes
//! every second to notice containers that exited. Each sync reads the runtime's state
//! (the sandboxes and containers labelled with the pod's uid: from one relist of the
//! node that all workers share while nothing changes, or, right after a change, from
//! the runtime filtering by the uid), so it is idempotent and a restarted agent picks
//! up running containers without restarting them. Pods deleted while the agent was away are cleaned up once
//! the first list is complete. Sandboxes are created a few at a time (twice the
//! cores), so that of many pods started together the first are Ready first.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
    ServiceAccount,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use krust_events::{Event, EventType, Recorder, Reporter};
use kube::Resource;

use crate::AgentConfig;
use crate::cri::{Cri, api};
use crate::eviction::{self, Pressure};
use crate::object_watches::ObjectWatches;
use crate::volumes;
use krust_api::pod_references::{Reference, references};

const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// How often a worker looks at its pod's containers without being woken.
const RESYNC_INTERVAL: Duration = Duration::from_secs(1);
/// First delay of CrashLoopBackOff and ImagePullBackOff, doubled up to the maximum.
const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// How often sandboxes of pods that no longer exist are looked for.
const ORPHAN_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The shared state of all pod workers.
struct Agent {
    client: kube::Client,
    cri: Cri,
    config: AgentConfig,
    pods: Store<Pod>,
    /// The ConfigMaps and Secrets the node's pods use, each watched alone.
    config_maps: ObjectWatches<ConfigMap>,
    secrets: ObjectWatches<Secret>,
    claims: Store<PersistentVolumeClaim>,
    persistent_volumes: Store<PersistentVolume>,
    /// Every Service, for the containers' service environment variables.
    services: Store<Service>,
    csi: crate::csi::mount::Mounter,
    workers: Mutex<HashMap<String, mpsc::Sender<()>>>,
    /// The latest usage sample (the eviction ranking's memory use).
    sampler: crate::stats::Sampler,
    /// The node's pressure conditions, published to the heartbeat.
    pressure: tokio::sync::watch::Sender<Pressure>,
    /// Pods the eviction manager chose, by UID, for their workers to stop and fail.
    evicted: Mutex<HashMap<String, Eviction>>,
    /// Events about pods (reporting controller `kubelet`, this node).
    recorder: Recorder,
    /// Service account tokens of projected volumes, by (pod uid, audience, lifetime).
    tokens: Mutex<HashMap<(String, String, i64), IssuedToken>>,
    /// Sandbox creations in flight at once ([`sandbox_start_limit`]).
    sandbox_starts: tokio::sync::Semaphore,
    /// The latest relist of the node's sandboxes and containers, which the workers
    /// share while nothing changes ([`Agent::runtime_view`]).
    relist: tokio::sync::Mutex<Option<Arc<Relist>>>,
}

/// The node's sandboxes and containers as one pair of list calls saw them.
struct Relist {
    /// When the lists were asked for.
    taken_at: Instant,
    /// How many changing runtime calls had finished then ([`crate::cri::Changes`]).
    changes: u64,
    sandboxes: Vec<api::PodSandbox>,
    containers: Vec<api::Container>,
}

/// How old a relist the workers may use, and how long after the agent's latest
/// change to the runtime they read their pods' state themselves instead.
const RELIST_MAX_AGE: Duration = RESYNC_INTERVAL;

/// How many sandboxes are created at once: twice the node's cores. Creating one
/// costs the runtime ~150 ms of CPU (runc, the CNI plugins, a shim); a hundred
/// pods started together all at once would all be Ready only at the end, while in
/// turns the first are Ready early and the last no later (BENCHMARKS.md).
fn sandbox_start_limit() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// An eviction the eviction manager decided, for the pod's worker to carry out.
#[derive(Clone, Debug)]
struct Eviction {
    /// Why: the pod's status message and its Evicted Event.
    message: String,
    /// How long its containers get to stop, in seconds.
    stop_grace: i64,
    /// Whether the pod gets the DisruptionTarget condition (node-pressure evictions
    /// do; local storage limit evictions do not, as upstream).
    disruption_target: bool,
}

impl volumes::Objects for Agent {
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        self.config_maps.get(namespace, name)
    }
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.secrets.get(namespace, name)
    }
    fn claim(&self, namespace: &str, name: &str) -> Option<PersistentVolumeClaim> {
        self.claims
            .get(&ObjectRef::new(name).within(namespace))
            .map(|c| (*c).clone())
    }
    fn volume(&self, name: &str) -> Option<PersistentVolume> {
        self.persistent_volumes
            .get(&ObjectRef::new(name))
            .map(|v| (*v).clone())
    }
    fn service_account_token(&self, uid: &str, audience: &str, expiration: i64) -> Option<String> {
        let tokens = self.tokens.lock().expect("tokens lock");
        let key = (uid.to_string(), audience.to_string(), expiration);
        tokens.get(&key).map(|issued| issued.token.clone())
    }
}

/// A service account token the API server issued for a pod.
struct IssuedToken {
    token: String,
    /// When to ask for a new one: 80% into its lifetime, at most a day after issue.
    refresh_at: Instant,
}

/// Watches the node's pods and runs their workers until the watch ends.
pub async fn run(
    client: kube::Client,
    cri: Cri,
    config: AgentConfig,
    sampler: crate::stats::Sampler,
    pressure: tokio::sync::watch::Sender<Pressure>,
    drivers: crate::csi::Drivers,
) -> Result<()> {
    // Claims, volumes and Services, cluster-wide (the node may read them all); nothing
    // waits on their change signal: the workers read the caches on each sync.
    let unused = Arc::new(tokio::sync::Notify::new());
    let (claims, _) = crate::local_path::watch_all::<PersistentVolumeClaim>(&client, &unused);
    let (persistent_volumes, _) =
        crate::local_path::watch_all::<PersistentVolume>(&client, &unused);
    let (services, _) = crate::local_path::watch_all::<Service>(&client, &unused);
    // As upstream's kubelet: containers start only once Services were read, so
    // their environment names every Service.
    services.wait_until_ready().await.ok();
    let config_maps = ObjectWatches::new(client.clone());
    let secrets = ObjectWatches::new(client.clone());

    let (pods, pod_writer) = reflector::store();
    let selector = format!("spec.nodeName={}", config.node_name);
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields(&selector),
        ),
    )
    .default_backoff();
    let csi = crate::csi::mount::Mounter::new(
        client.clone(),
        config.node_name.clone(),
        config.data_dir.clone(),
        drivers,
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kubelet".into(),
            instance: Some(config.node_name.clone()),
        },
    );
    let agent = Arc::new(Agent {
        csi,
        recorder,
        client,
        cri,
        config,
        pods,
        config_maps,
        secrets,
        claims,
        persistent_volumes,
        services,
        workers: Mutex::new(HashMap::new()),
        sampler,
        pressure,
        evicted: Mutex::new(HashMap::new()),
        tokens: Mutex::new(HashMap::new()),
        sandbox_starts: tokio::sync::Semaphore::new(sandbox_start_limit()),
        relist: tokio::sync::Mutex::new(None),
    });
    let mut pod_stream = std::pin::pin!(pod_stream);
    let mut orphan_sweeper = None;
    while let Some(event) = pod_stream.next().await {
        match event {
            Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::Delete(pod)) => agent.wake(&pod),
            // The cache takes a (re)list in only at InitDone: a worker woken before
            // would find its pod missing and tear it down.
            Ok(watcher::Event::InitApply(_)) => {}
            Ok(watcher::Event::InitDone) => {
                for pod in agent.pods.state() {
                    agent.wake(&pod);
                }
                if orphan_sweeper.is_none() {
                    orphan_sweeper = Some(tokio::spawn(agent.clone().sweep_orphans()));
                    tokio::spawn(agent.clone().manage_pressure());
                }
            }
            Ok(watcher::Event::Init) => {}
            Err(error) => tracing::warn!(%error, "the pod watch failed; retrying"),
        }
    }
    bail!("the pod watch ended")
}

impl Agent {
    /// Wakes the pod's worker, starting one if it has none.
    fn wake(self: &Arc<Self>, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let mut workers = self.workers.lock().expect("workers lock");
        if let Some(sender) = workers.get(&uid) {
            let _ = sender.try_send(());
            return;
        }
        let (sender, receiver) = mpsc::channel(1);
        workers.insert(uid.clone(), sender);
        let key = ObjectRef::from_obj(pod);
        tokio::spawn(self.clone().worker(uid, key, receiver));
    }

    async fn worker(
        self: Arc<Self>,
        uid: String,
        key: ObjectRef<Pod>,
        mut wake: mpsc::Receiver<()>,
    ) {
        let mut state = PodState::default();
        loop {
            let pod = self
                .pods
                .get(&key)
                .filter(|p| p.metadata.uid.as_deref() == Some(uid.as_str()));
            match self.sync(&uid, pod.as_deref(), &mut state).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(pod = %key, error = format!("{error:#}"), "pod sync failed; retrying")
                }
            }
            tokio::select! {
                _ = wake.recv() => {}
                _ = tokio::time::sleep(RESYNC_INTERVAL) => {}
            }
        }
        self.workers.lock().expect("workers lock").remove(&uid);
        self.config_maps.release(&uid);
        self.secrets.release(&uid);
        self.tokens
            .lock()
            .expect("tokens lock")
            .retain(|(pod, _, _), _| pod != &uid);
    }

    /// The runtime's sandboxes and containers of pod `uid`. While the agent changes
    /// nothing in the runtime, the workers share one relist of the node a second (two
    /// calls in all, where each worker reading its own would make two per pod); for a
    /// second after a change, each reads its pod's own, so that what was just done
    /// shows. A container that exits is seen within two seconds either way.
    async fn runtime_view(
        &self,
        cri: &mut Cri,
        uid: &str,
        cache: &mut HashMap<String, (i32, api::ContainerStatus)>,
    ) -> Result<RuntimeView> {
        let Some(relist) = self.shared_relist(cri).await? else {
            return RuntimeView::load(cri, uid, cache).await;
        };
        let of_pod = |labels: &HashMap<String, String>| {
            labels.get(LABEL_POD_UID).map(String::as_str) == Some(uid)
        };
        let sandboxes = relist
            .sandboxes
            .iter()
            .filter(|s| of_pod(&s.labels))
            .cloned()
            .collect();
        let containers = relist
            .containers
            .iter()
            .filter(|c| of_pod(&c.labels))
            .cloned()
            .collect();
        RuntimeView::from_lists(cri, sandboxes, containers, cache).await
    }

    /// The shared relist: the latest one while no change happened since and it is
    /// recent, a new one when the runtime has been left alone for a while, or none
    /// (read the pod's own) right after a change.
    async fn shared_relist(&self, cri: &mut Cri) -> Result<Option<Arc<Relist>>> {
        let mut latest = self.relist.lock().await;
        let changes = cri.changes();
        if let Some(relist) = latest.as_ref()
            && relist.changes == changes.count
            && relist.taken_at.elapsed() < RELIST_MAX_AGE
        {
            return Ok(Some(relist.clone()));
        }
        if changes.last.is_some_and(|at| at.elapsed() < RELIST_MAX_AGE) {
            return Ok(None);
        }
        let taken_at = Instant::now();
        let sandboxes = cri.list_pod_sandboxes().await?;
        let containers = cri.list_containers().await?;
        let relist = Arc::new(Relist {
            taken_at,
            changes: changes.count,
            sandboxes,
            containers,
        });
        *latest = Some(relist.clone());
        Ok(Some(relist))
    }

    /// Asks the API server for the service account tokens the pod's projected
    /// volumes hold, when missing or due for refresh (upstream's token manager: 80%
    /// into the requested lifetime, or after a day).
    async fn refresh_tokens(&self, pod: &Pod) -> Result<()> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.clone().unwrap_or_default();
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "default".into());
        for (audience, expiration) in volumes::token_sources(pod) {
            let key = (uid.clone(), audience.clone(), expiration);
            let due = self
                .tokens
                .lock()
                .expect("tokens lock")
                .get(&key)
                .is_none_or(|issued| Instant::now() >= issued.refresh_at);
            if !due {
                continue;
            }
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: if audience.is_empty() {
                        Vec::new()
                    } else {
                        vec![audience.clone()]
                    },
                    expiration_seconds: Some(expiration),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(name.clone()),
                        uid: Some(uid.clone()),
                    }),
                },
                ..Default::default()
            };
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
            let issued = api
                .create_token_request(&account, &Default::default(), &request)
                .await
                .with_context(|| {
                    format!("cannot get a token for service account {namespace}/{account}")
                })?;
            let token = issued
                .status
                .map(|s| s.token)
                .filter(|t| !t.is_empty())
                .context("the API server answered the token request without a token")?;
            let lifetime = Duration::from_secs(expiration.max(0) as u64);
            let refresh_in = (lifetime * 4 / 5).min(Duration::from_secs(24 * 3600));
            self.tokens.lock().expect("tokens lock").insert(
                key,
                IssuedToken {
                    token,
                    refresh_at: Instant::now() + refresh_in,
                },
            );
        }
        Ok(())
    }

    /// Watches the ConfigMaps and Secrets `pod` names (the only ones a node may
    /// read) and waits a little for their caches, so the first sync finds them.
    async fn track_objects(&self, uid: &str, pod: &Pod, state: &mut PodState) {
        if state.objects_tracked {
            return;
        }
        const FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(5);
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let spec = serde_json::to_value(pod).unwrap_or_default();
        let config_map_names = references(&spec, Reference::ConfigMap);
        let secret_names = references(&spec, Reference::Secret);
        let (config_maps, secrets) = tokio::join!(
            self.config_maps
                .track(uid, namespace, &config_map_names, FIRST_LIST_TIMEOUT),
            self.secrets
                .track(uid, namespace, &secret_names, FIRST_LIST_TIMEOUT),
        );
        state.objects_tracked = config_maps && secrets;
    }

    /// Once the pod cache is complete, and every 10 s after, removes the sandboxes
    /// of pods that are gone (also those deleted while the agent was away).
    async fn sweep_orphans(self: Arc<Self>) {
        loop {
            if let Err(error) = self.clean_orphans().await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot clean up the sandboxes of deleted pods; retrying"
                );
            }
            tokio::time::sleep(ORPHAN_SWEEP_INTERVAL).await;
        }
    }

    /// Removes the sandboxes of pods that are no longer bound to this node.
    async fn clean_orphans(self: &Arc<Self>) -> Result<()> {
        let mut cri = self.cri.clone();
        let known: std::collections::HashSet<String> = self
            .pods
            .state()
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        for sandbox in cri.list_pod_sandboxes().await? {
            let Some(uid) = sandbox.labels.get(LABEL_POD_UID) else {
                continue;
            };
            let has_worker = self.workers.lock().expect("workers lock").contains_key(uid);
            if !known.contains(uid) && !has_worker {
                tracing::info!(uid, "removing the sandbox of a pod that no longer exists");
                self.remove_pod(uid, None, 0).await?;
            }
        }
        // CSI volumes still published for pods that are gone (the agent stopped
        // between removing the sandbox and unpublishing).
        for uid in self.csi.published_pods() {
            let has_worker = self
                .workers
                .lock()
                .expect("workers lock")
                .contains_key(&uid);
            if !known.contains(&uid) && !has_worker {
                tracing::info!(
                    uid,
                    "unpublishing the CSI volumes of a pod that no longer exists"
                );
                self.csi.unpublish_pod(&uid).await?;
            }
        }
        Ok(())
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.config.data_dir.join("pods").join(uid)
    }

    fn log_dir(&self, pod: &Pod) -> PathBuf {
        let meta = &pod.metadata;
        self.config.data_dir.join("logs").join(format!(
            "{}_{}_{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default()
        ))
    }

    /// One pass over the pod; Ok(true) once the pod is gone and cleaned up.
    async fn sync(&self, uid: &str, pod: Option<&Pod>, state: &mut PodState) -> Result<bool> {
        let Some(pod) = pod else {
            self.remove_pod(uid, None, 0).await?;
            return Ok(true);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| {
                    pod.spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(DEFAULT_GRACE_SECONDS);
            self.remove_pod(uid, Some(pod), grace).await?;
            let api: Api<Pod> = Api::namespaced(
                self.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api
                .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(error) => return Err(error).context("cannot delete the stopped pod"),
            }
            return Ok(true);
        }
        self.track_objects(uid, pod, state).await;
        let spec = pod.spec.clone().unwrap_or_default();
        let mut cri = self.cri.clone();
        let runtime = self
            .runtime_view(&mut cri, uid, &mut state.status_cache)
            .await?;
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        );
        if terminal {
            // Nothing runs again; the sandbox (and its network) goes.
            for sandbox in runtime
                .sandboxes
                .iter()
                .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
            {
                cri.stop_pod_sandbox(&sandbox.id).await?;
            }
            return Ok(false);
        }
        let evicted = self.evicted.lock().expect("evicted lock").get(uid).cloned();
        if let Some(eviction) = evicted {
            let grace = eviction.stop_grace;
            if grace > 0 {
                let running = runtime
                    .containers
                    .iter()
                    .filter(|(c, _)| c.state == api::ContainerState::ContainerRunning as i32);
                let stops = running.map(|(c, _)| {
                    let mut cri = cri.clone();
                    let id = c.id.clone();
                    async move { cri.stop_container(&id, grace).await }
                });
                for result in futures::future::join_all(stops).await {
                    result?;
                }
            }
            for sandbox in &runtime.sandboxes {
                cri.stop_pod_sandbox(&sandbox.id).await?;
            }
            self.write_failed(pod, &eviction.message, eviction.disruption_target, state)
                .await?;
            self.event(pod, None, EventType::Warning, "Evicted", eviction.message);
            self.evicted.lock().expect("evicted lock").remove(uid);
            return Ok(false);
        }
        let never_started = runtime.sandboxes.is_empty()
            && pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_none_or(|c| c.is_empty());
        let pressure = *self.pressure.borrow();
        if never_started && let Err(message) = eviction::admit(pod, pressure) {
            tracing::info!(pod = ?pod.metadata.name, %message, "pod refused under node pressure");
            self.write_failed(pod, &message, false, state).await?;
            self.event(pod, None, EventType::Warning, "Evicted", message);
            return Ok(false);
        }

        let sandbox = self.ensure_sandbox(&mut cri, pod, &runtime, state).await?;
        let runtime = if sandbox.created {
            self.runtime_view(&mut cri, uid, &mut state.status_cache)
                .await?
        } else {
            runtime
        };
        let pods_dir = self.config.data_dir.join("pods");
        let published = match self.refresh_tokens(pod).await {
            Ok(()) => self.csi.publish_pod(pod, self).await,
            Err(error) => Err(error),
        };
        let volumes_ok = match published.and_then(|()| volumes::sync(&pods_dir, pod, self)) {
            Ok(()) => {
                state.volume_error = None;
                true
            }
            Err(error) => {
                let message = format!("{error:#}");
                if state.volume_error.as_ref() != Some(&message) {
                    tracing::warn!(pod = ?pod.metadata.name, %message, "cannot set up the pod's volumes");
                    let note = format!("MountVolume.SetUp failed: {message}");
                    self.event(pod, None, EventType::Warning, "FailedMount", note);
                    state.volume_error = Some(message.clone());
                }
                for c in spec
                    .init_containers
                    .iter()
                    .flatten()
                    .chain(&spec.containers)
                {
                    state.waiting.insert(
                        c.name.clone(),
                        ("ContainerCreating".into(), message.clone()),
                    );
                }
                false
            }
        };

        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut initialized = true;
        let mut failed_init = false;
        if volumes_ok {
            for container in spec.init_containers.iter().flatten() {
                let sidecar = container.restart_policy.as_deref() == Some("Always");
                let rule = if sidecar {
                    Restart::Always
                } else if policy == "Never" {
                    Restart::Never
                } else {
                    Restart::OnFailure
                };
                let outcome = self
                    .ensure_container(&mut cri, pod, container, rule, &sandbox, &runtime, state)
                    .await?;
                match outcome {
                    Outcome::Running if sidecar => continue,
                    Outcome::Exited(0) if !sidecar => continue,
                    Outcome::Exited(_) if !sidecar && rule == Restart::Never => {
                        failed_init = true;
                        initialized = false;
                        break;
                    }
                    _ => {
                        initialized = false;
                        break;
                    }
                }
            }
            if initialized {
                let rule = match policy.as_str() {
                    "Never" => Restart::Never,
                    "OnFailure" => Restart::OnFailure,
                    _ => Restart::Always,
                };
                for container in &spec.containers {
                    self.ensure_container(
                        &mut cri, pod, container, rule, &sandbox, &runtime, state,
                    )
                    .await?;
                }
            }
        } else {
            initialized = false;
        }
        let mut runtime = self
            .runtime_view(&mut cri, uid, &mut state.status_cache)
            .await?;
        if self
            .run_probes(&mut cri, pod, &runtime, &sandbox, state)
            .await
        {
            runtime = self
                .runtime_view(&mut cri, uid, &mut state.status_cache)
                .await?;
        }
        let status = self.status(pod, &runtime, &sandbox, state, initialized, failed_init);
        self.write_status(pod, status, state).await?;
        runtime.remove_dead(&mut cri).await;
        Ok(false)
    }

    /// Runs the due probes of the pod's running containers, records their verdicts
    /// and kills containers whose liveness or startup probe failed. True when it
    /// killed one.
    async fn run_probes(
        &self,
        cri: &mut Cri,
        pod: &Pod,
        runtime: &RuntimeView,
        sandbox: &SandboxInfo,
        state: &mut PodState,
    ) -> bool {
        let spec = pod.spec.clone().unwrap_or_default();
        let grace = spec
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        let mut killed = false;
        let mut live = Vec::new();
        for container in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            let Some((c, status)) = runtime.latest(&container.name) else {
                continue;
            };
            if c.state != api::ContainerState::ContainerRunning as i32 {
                continue;
            }
            live.push(c.id.as_str());
            let running_for =
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - status.started_at;
            let started_at = Instant::now()
                .checked_sub(Duration::from_nanos(running_for.max(0) as u64))
                .unwrap_or_else(Instant::now);
            let verdict = state
                .prober
                .check(cri, container, &c.id, started_at, &sandbox.ip)
                .await;
            for (kind, why) in &verdict.failures {
                let note = format!("{} probe failed: {why}", kind.name());
                self.event(
                    pod,
                    Some(&container.name),
                    EventType::Warning,
                    "Unhealthy",
                    note,
                );
            }
            if let Some(kind) = verdict.killed_by {
                let note = format!(
                    "Container {} failed {} probe, will be restarted",
                    container.name,
                    kind.name().to_lowercase()
                );
                self.event(
                    pod,
                    Some(&container.name),
                    EventType::Normal,
                    "Killing",
                    note,
                );
            }
            if verdict.kill {
                if let Err(error) = cri.stop_container(&c.id, grace).await {
                    tracing::warn!(container = %container.name, %error, "cannot kill the container that failed its probe");
                }
                killed = true;
            }
            state.verdicts.insert(container.name.clone(), verdict);
        }
        state.prober.retain(&live);
        killed
    }

    async fn ensure_sandbox(
        &self,
        cri: &mut Cri,
        pod: &Pod,
        runtime: &RuntimeView,
        state: &mut PodState,
    ) -> Result<SandboxInfo> {
        let ready = runtime
            .sandboxes
            .iter()
            .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
            .max_by_key(|s| s.created_at);
        let attempt = runtime
            .sandboxes
            .iter()
            .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
            .max()
            .unwrap_or(0);
        if let Some(sandbox) = ready {
            let attempt = sandbox.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
            let ip = match &state.sandbox_ip {
                Some((id, ip)) if *id == sandbox.id => ip.clone(),
                _ => {
                    let status = cri.pod_sandbox_status(&sandbox.id).await?;
                    let ip = status.network.map(|n| n.ip).unwrap_or_default();
                    state.sandbox_ip = Some((sandbox.id.clone(), ip.clone()));
                    ip
                }
            };
            return Ok(SandboxInfo {
                id: sandbox.id.clone(),
                config: self.sandbox_config(pod, attempt, false),
                ip,
                created: false,
            });
        }
        // A sandbox that died takes its containers with it: they start again in the new one.
        for old in &runtime.sandboxes {
            let _ = cri.stop_pod_sandbox(&old.id).await;
        }
        let config = self.sandbox_config(pod, attempt, true);
        std::fs::create_dir_all(&config.log_directory)?;
        let id = {
            let _permit = self.sandbox_starts.acquire().await?;
            cri.run_pod_sandbox(config.clone()).await?
        };
        let status = cri.pod_sandbox_status(&id).await?;
        let ip = status.network.map(|n| n.ip).unwrap_or_default();
        state.sandbox_ip = Some((id.clone(), ip.clone()));
        Ok(SandboxInfo {
            id,
            config,
            ip,
            created: true,
        })
    }

    /// The pod's sandbox settings; `new` for a sandbox about to be created, whose DNS
    /// warnings are logged and published as DNSConfigForming Events.
    fn sandbox_config(&self, pod: &Pod, attempt: u32, new: bool) -> api::PodSandboxConfig {
        let meta = &pod.metadata;
        let spec = pod.spec.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let uid = meta.uid.clone().unwrap_or_default();
        let host_network = spec.host_network.unwrap_or(false);
        let hostname = if host_network {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        } else {
            let mut h = spec.hostname.clone().unwrap_or_else(|| name.clone());
            h.truncate(63);
            h.trim_end_matches(['-', '.']).to_string()
        };
        let labels = HashMap::from([
            (LABEL_POD_UID.to_string(), uid.clone()),
            (LABEL_POD_NAME.to_string(), name.clone()),
            (LABEL_POD_NAMESPACE.to_string(), namespace.clone()),
        ]);
        let security = spec.security_context.clone().unwrap_or_default();
        let dns = self.dns_config(&spec, &namespace);
        if new {
            for warning in dns.warnings {
                tracing::warn!(pod = %format!("{namespace}/{name}"), "DNSConfigForming: {warning}");
                self.event(pod, None, EventType::Warning, "DNSConfigForming", warning);
            }
        }
        let dns_config = dns.config;
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name,
                uid: uid.clone(),
                namespace: namespace.clone(),
                attempt,
            }),
            hostname,
            log_directory: self.log_dir(pod).display().to_string(),
            dns_config: Some(dns_config),
            labels,
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent(pod),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespace_options(&spec)),
                    run_as_user: security.run_as_user.map(|value| api::Int64Value { value }),
                    run_as_group: security.run_as_group.map(|value| api::Int64Value { value }),
                    supplemental_groups: security.supplemental_groups.clone().unwrap_or_default(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The pod's resolv.conf ([`crate::dns`]), from the host's as it is now.
    fn dns_config(
        &self,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        namespace: &str,
    ) -> crate::dns::PodDns {
        let host = std::fs::read_to_string(&self.config.resolv_conf).unwrap_or_else(|error| {
            tracing::warn!(path = %self.config.resolv_conf.display(), %error,
                "cannot read the host resolv.conf (--resolv-conf); pods get no host DNS settings");
            String::new()
        });
        let node = crate::dns::NodeDns {
            cluster_servers: self.config.cluster_dns.clone(),
            cluster_domain: self.config.cluster_domain.clone(),
            host: crate::dns::parse_resolv_conf(&host),
        };
        crate::dns::pod_dns(spec, namespace, &node)
    }

    /// Brings one container to its desired state for this pass.
    #[allow(clippy::too_many_arguments)]
    async fn ensure_container(
        &self,
        cri: &mut Cri,
        pod: &Pod,
        container: &Container,
        rule: Restart,
        sandbox: &SandboxInfo,
        runtime: &RuntimeView,
        state: &mut PodState,
    ) -> Result<Outcome> {
        let latest = runtime.latest(&container.name);
        let attempt = match latest {
            Some((c, status)) => {
                let exit = status.exit_code;
                match api::ContainerState::try_from(c.state) {
                    Ok(api::ContainerState::ContainerRunning) => {
                        state.waiting.remove(&container.name);
                        return Ok(Outcome::Running);
                    }
                    // Right after a containerd restart a container can be unknown
                    // until its shim answers: wait, never start a second one.
                    Ok(api::ContainerState::ContainerUnknown) => return Ok(Outcome::Waiting),
                    Ok(api::ContainerState::ContainerCreated) => {
                        if let Err(error) = cri.start_container(&c.id).await {
                            state.waiting.insert(
                                container.name.clone(),
                                ("RunContainerError".into(), format!("{error:#}")),
                            );
                            return Ok(Outcome::Waiting);
                        }
                        state.waiting.remove(&container.name);
                        return Ok(Outcome::Running);
                    }
                    _ => {
                        let restart = match rule {
                            Restart::Always => true,
                            Restart::OnFailure => exit != 0,
                            Restart::Never => false,
                        };
                        if !restart {
                            state.waiting.remove(&container.name);
                            return Ok(Outcome::Exited(exit));
                        }
                        if let Some(backoff) = state.crash_backoff.get(&container.name)
                            && Instant::now() < backoff.until
                        {
                            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
                            let message = format!(
                                "back-off {} restarting failed container={} pod={pod_name}",
                                human(backoff.delay),
                                container.name,
                            );
                            let note = format!(
                                "Back-off restarting failed container {} in pod {pod_name}",
                                container.name
                            );
                            self.wait(
                                pod,
                                state,
                                &container.name,
                                ("CrashLoopBackOff", message),
                                (EventType::Warning, "BackOff", note),
                            );
                            return Ok(Outcome::Waiting);
                        }
                        c.metadata.as_ref().map(|m| m.attempt + 1).unwrap_or(1)
                    }
                }
            }
            None => 0,
        };

        let Some(image) = self.ensure_image(cri, pod, container, state).await else {
            return Ok(Outcome::Waiting);
        };
        let config = match self.container_config(pod, container, attempt, &image, sandbox) {
            Ok(config) => config,
            Err(error) => {
                let message = format!("{error:#}");
                let note = format!("Error: {message}");
                self.wait(
                    pod,
                    state,
                    &container.name,
                    ("CreateContainerConfigError", message),
                    (EventType::Warning, "Failed", note),
                );
                return Ok(Outcome::Waiting);
            }
        };
        let id = match cri
            .create_container(&sandbox.id, config, sandbox.config.clone())
            .await
        {
            Ok(id) => id,
            Err(error) => {
                let message = format!("{error:#}");
                let note = format!("Error: {message}");
                self.wait(
                    pod,
                    state,
                    &container.name,
                    ("CreateContainerError", message),
                    (EventType::Warning, "Failed", note),
                );
                return Ok(Outcome::Waiting);
            }
        };
        self.event(
            pod,
            Some(&container.name),
            EventType::Normal,
            "Created",
            format!("Created container: {}", container.name),
        );
        if attempt > 0 {
            let delay = state
                .crash_backoff
                .get(&container.name)
                .map(|b| (b.delay * 2).min(BACKOFF_MAX))
                .unwrap_or(BACKOFF_INITIAL);
            state.crash_backoff.insert(
                container.name.clone(),
                Backoff {
                    delay,
                    until: Instant::now() + delay,
                },
            );
        }
        if let Err(error) = cri.start_container(&id).await {
            // containerd records the failed start as an exit (128, StartError): the next
            // pass reports it and backs off like a crash.
            state.waiting.insert(
                container.name.clone(),
                ("RunContainerError".into(), format!("{error:#}")),
            );
            state
                .crash_backoff
                .entry(container.name.clone())
                .or_insert(Backoff {
                    delay: BACKOFF_INITIAL,
                    until: Instant::now() + BACKOFF_INITIAL,
                });
            return Ok(Outcome::Waiting);
        }
        self.event(
            pod,
            Some(&container.name),
            EventType::Normal,
            "Started",
            format!("Started container {}", container.name),
        );
        state.waiting.remove(&container.name);
        if let Some(hook) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .and_then(|h| h.exec.as_ref())
        {
            let command = hook.command.clone().unwrap_or_default();
            match cri.exec_sync(&id, command, 30).await {
                Ok(result) if result.exit_code == 0 => {}
                outcome => {
                    tracing::warn!(container = %container.name, ?outcome, "postStart hook failed; killing the container");
                    let _ = cri.stop_container(&id, 0).await;
                }
            }
        }
        Ok(Outcome::Running)
    }

    /// Makes the container's image present per its pull policy; None (with the
    /// waiting reason recorded) when it is not.
    async fn ensure_image(
        &self,
        cri: &mut Cri,
        pod: &Pod,
        container: &Container,
        state: &mut PodState,
    ) -> Option<String> {
        let image = container.image.clone().unwrap_or_default();
        let tagged = image.contains('@')
            || image
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'));
        let policy = container.image_pull_policy.clone().unwrap_or_else(|| {
            if !tagged || image.ends_with(":latest") {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let present = match cri.image_status(&image).await {
            Ok(found) => found.map(|i| i.id),
            Err(error) => {
                state.waiting.insert(
                    container.name.clone(),
                    ("ErrImagePull".into(), format!("{error:#}")),
                );
                return None;
            }
        };
        if policy == "Never" {
            return match present {
                Some(id) => Some(id),
                None => {
                    state.waiting.insert(
                        container.name.clone(),
                        ("ErrImageNeverPull".into(), format!("Container image \"{image}\" is not present with pull policy of Never")),
                    );
                    None
                }
            };
        }
        if policy == "IfNotPresent"
            && let Some(id) = present
        {
            if state.pulled.insert(container.name.clone()) {
                let note = format!("Container image \"{image}\" already present on machine");
                self.event(
                    pod,
                    Some(&container.name),
                    EventType::Normal,
                    "Pulled",
                    note,
                );
            }
            return Some(id);
        }
        if let Some(backoff) = state.pull_backoff.get(&container.name)
            && Instant::now() < backoff.until
        {
            let message = format!("Back-off pulling image \"{image}\"");
            self.wait(
                pod,
                state,
                &container.name,
                ("ImagePullBackOff", message.clone()),
                (EventType::Normal, "BackOff", message),
            );
            return None;
        }
        let auth = self.pull_auth(pod, &image);
        self.event(
            pod,
            Some(&container.name),
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let started = Instant::now();
        match cri.pull_image(&image, auth).await {
            Ok(id) => {
                state.pull_backoff.remove(&container.name);
                state.pulled.insert(container.name.clone());
                let note = format!(
                    "Successfully pulled image \"{image}\" in {:?}",
                    started.elapsed()
                );
                self.event(
                    pod,
                    Some(&container.name),
                    EventType::Normal,
                    "Pulled",
                    note,
                );
                Some(id)
            }
            Err(error) => {
                let delay = state
                    .pull_backoff
                    .get(&container.name)
                    .map(|b| (b.delay * 2).min(BACKOFF_MAX))
                    .unwrap_or(BACKOFF_INITIAL);
                state.pull_backoff.insert(
                    container.name.clone(),
                    Backoff {
                        delay,
                        until: Instant::now() + delay,
                    },
                );
                let note = format!("Failed to pull image \"{image}\": {error:#}");
                self.event(
                    pod,
                    Some(&container.name),
                    EventType::Warning,
                    "Failed",
                    note,
                );
                let message = format!("failed to pull image \"{image}\": {error:#}");
                state
                    .waiting
                    .insert(container.name.clone(), ("ErrImagePull".into(), message));
                None
            }
        }
    }

    /// Credentials for `image` from the pod's imagePullSecrets (dockerconfigjson).
    fn pull_auth(&self, pod: &Pod, image: &str) -> Option<api::AuthConfig> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let registry = image
            .split('/')
            .next()
            .filter(|h| h.contains('.') || h.contains(':'))?;
        for reference in pod.spec.as_ref()?.image_pull_secrets.iter().flatten() {
            let secret = volumes::Objects::secret(self, namespace, &reference.name)?;
            let data = secret.data.as_ref()?;
            let raw = data
                .get(".dockerconfigjson")
                .or_else(|| data.get(".dockercfg"))?;
            let parsed: Value = serde_json::from_slice(&raw.0).ok()?;
            let auths = parsed.get("auths").unwrap_or(&parsed);
            if let Some(entry) = auths.get(registry) {
                return Some(api::AuthConfig {
                    username: entry["username"].as_str().unwrap_or_default().into(),
                    password: entry["password"].as_str().unwrap_or_default().into(),
                    auth: entry["auth"].as_str().unwrap_or_default().into(),
                    server_address: registry.into(),
                    ..Default::default()
                });
            }
        }
        None
    }

    fn container_config(
        &self,
        pod: &Pod,
        container: &Container,
        attempt: u32,
        image: &str,
        sandbox: &SandboxInfo,
    ) -> Result<api::ContainerConfig> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let services = self.services.state();
        let service_env = crate::service_env::for_pod(services.iter().map(|s| s.as_ref()), pod);
        let env = resolve_env(pod, container, self, &sandbox.ip, &service_env)?;
        let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let expand_all = |list: &Option<Vec<String>>| -> Vec<String> {
            list.iter().flatten().map(|s| expand(s, &vars)).collect()
        };
        let pods_dir = self.config.data_dir.join("pods");
        let mut mounts = volumes::mounts(&pods_dir, pod, container, self, &vars)?;
        // The termination message file, read back when the container ends.
        let term_path = container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        let term_file = termination_file(&pods_dir, &uid, &container.name, attempt);
        if let Some(parent) = term_file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&term_file, b"")?;
        mounts.push(api::Mount {
            container_path: term_path,
            host_path: term_file.display().to_string(),
            ..Default::default()
        });
        let spec = pod.spec.clone().unwrap_or_default();
        if !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
            let hosts_file = pods_dir.join(&uid).join("etc-hosts");
            std::fs::write(&hosts_file, hosts_file_contents(pod, &sandbox.ip))?;
            mounts.push(api::Mount {
                container_path: "/etc/hosts".into(),
                host_path: hosts_file.display().to_string(),
                ..Default::default()
            });
        }
        let pod_security = spec.security_context.clone().unwrap_or_default();
        let security = container.security_context.clone().unwrap_or_default();
        let capabilities = security.capabilities.clone().unwrap_or_default();
        let seccomp = security
            .seccomp_profile
            .as_ref()
            .or(pod_security.seccomp_profile.as_ref())
            .and_then(|p| match p.type_.as_str() {
                "RuntimeDefault" => Some(api::SecurityProfile {
                    profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                _ => None,
            });
        let run_as_user = security.run_as_user.or(pod_security.run_as_user);
        if security.run_as_non_root.or(pod_security.run_as_non_root) == Some(true)
            && run_as_user.unwrap_or(0) == 0
        {
            bail!(
                "container has runAsNonRoot and image will run as root (set runAsUser to a non-zero uid)"
            );
        }
        let mut supplemental = pod_security.supplemental_groups.clone().unwrap_or_default();
        if let Some(fs_group) = pod_security.fs_group {
            supplemental.push(fs_group);
        }
        Ok(api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: container.name.clone(),
                attempt,
            }),
            image: Some(api::ImageSpec {
                image: image.to_string(),
                user_specified_image: container.image.clone().unwrap_or_default(),
                ..Default::default()
            }),
            command: expand_all(&container.command),
            args: expand_all(&container.args),
            working_dir: container.working_dir.clone().unwrap_or_default(),
            envs: env
                .iter()
                .map(|(key, value)| api::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts,
            labels: HashMap::from([
                (LABEL_POD_UID.to_string(), uid),
                (
                    LABEL_POD_NAME.to_string(),
                    pod.metadata.name.clone().unwrap_or_default(),
                ),
                (
                    LABEL_POD_NAMESPACE.to_string(),
                    pod.metadata.namespace.clone().unwrap_or_default(),
                ),
                (LABEL_CONTAINER_NAME.to_string(), container.name.clone()),
            ]),
            log_path: format!("{}/{attempt}.log", container.name),
            stdin: container.stdin.unwrap_or(false),
            stdin_once: container.stdin_once.unwrap_or(false),
            tty: container.tty.unwrap_or(false),
            linux: Some(api::LinuxContainerConfig {
                resources: Some(container_resources(pod, container)),
                security_context: Some(api::LinuxContainerSecurityContext {
                    capabilities: Some(api::Capability {
                        add_capabilities: capabilities.add.unwrap_or_default(),
                        drop_capabilities: capabilities.drop.unwrap_or_default(),
                        ..Default::default()
                    }),
                    privileged: security.privileged.unwrap_or(false),
                    namespace_options: Some(namespace_options(&spec)),
                    run_as_user: run_as_user.map(|value| api::Int64Value { value }),
                    run_as_group: security
                        .run_as_group
                        .or(pod_security.run_as_group)
                        .map(|value| api::Int64Value { value }),
                    readonly_rootfs: security.read_only_root_filesystem.unwrap_or(false),
                    supplemental_groups: supplemental,
                    no_new_privs: security.allow_privilege_escalation == Some(false),
                    seccomp,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        })
    }

    /// Stops every container of the pod (preStop hooks first, SIGTERM then SIGKILL
    /// after `grace` seconds) and removes its sandboxes, volumes and logs.
    async fn remove_pod(&self, uid: &str, pod: Option<&Pod>, grace: i64) -> Result<()> {
        let mut cri = self.cri.clone();
        let mut cache = HashMap::new();
        let runtime = RuntimeView::load(&mut cri, uid, &mut cache).await?;
        let running: Vec<&api::Container> = runtime
            .containers
            .iter()
            .filter(|(c, _)| {
                c.state == api::ContainerState::ContainerRunning as i32
                    || c.state == api::ContainerState::ContainerUnknown as i32
            })
            .map(|(c, _)| c)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
        let stops = running.iter().map(|container| {
            let mut cri = cri.clone();
            let name = container
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            let hook = pod
                .and_then(|p| p.spec.as_ref())
                .and_then(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                        .find(|c| c.name == name)
                })
                .and_then(|c| c.lifecycle.as_ref())
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.exec.as_ref())
                .and_then(|e| e.command.clone());
            let id = container.id.clone();
            if let Some(pod) = pod {
                let note = format!("Stopping container {name}");
                self.event(pod, Some(&name), EventType::Normal, "Killing", note);
            }
            async move {
                if let Some(command) = hook {
                    let budget = deadline
                        .saturating_duration_since(Instant::now())
                        .as_secs()
                        .max(1) as i64;
                    let _ = cri.exec_sync(&id, command, budget).await;
                }
                let left = deadline.saturating_duration_since(Instant::now()).as_secs() as i64;
                cri.stop_container(&id, left).await
            }
        });
        for result in futures::future::join_all(stops).await {
            result?;
        }
        for sandbox in &runtime.sandboxes {
            cri.stop_pod_sandbox(&sandbox.id).await?;
            cri.remove_pod_sandbox(&sandbox.id).await?;
        }
        // The drivers unmount what they published before anything else is removed.
        self.csi.unpublish_pod(uid).await?;
        let pod_dir = self.pod_dir(uid);
        volumes::unmount_all_under(&pod_dir);
        let _ = std::fs::remove_dir_all(&pod_dir);
        if let Some(pod) = pod {
            let _ = std::fs::remove_dir_all(self.log_dir(pod));
        }
        remove_pod_cgroups(uid);
        Ok(())
    }

    /// The pod's status from the runtime's view, as upstream's kubelet computes it.
    fn status(
        &self,
        pod: &Pod,
        runtime: &RuntimeView,
        sandbox: &SandboxInfo,
        state: &PodState,
        initialized: bool,
        failed_init: bool,
    ) -> Value {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let init_statuses: Vec<Value> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| container_status(c, runtime, state, "PodInitializing", true))
            .collect();
        let statuses: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| {
                container_status(
                    c,
                    runtime,
                    state,
                    if initialized {
                        "ContainerCreating"
                    } else {
                        "PodInitializing"
                    },
                    false,
                )
            })
            .collect();
        let phase = if failed_init {
            "Failed"
        } else if !initialized {
            "Pending"
        } else {
            phase(&statuses, &policy)
        };
        let all_ready = statuses.iter().all(|s| s["ready"] == json!(true));
        let previous = pod.status.clone().unwrap_or_default();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let condition = |kind: &str, ok: bool, reason: Option<&str>| {
            let status = if ok { "True" } else { "False" };
            let since = previous
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == kind && c.status == status)
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| now.clone());
            let mut value = json!({ "type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since });
            if let Some(reason) = reason.filter(|_| !ok) {
                value["reason"] = json!(reason);
            }
            value
        };
        let ready_to_start = !sandbox.id.is_empty();
        let ip = sandbox.ip.clone();
        let host_ip = self.config.node_ip.to_string();
        let pod_ip = if spec.host_network.unwrap_or(false) {
            host_ip.clone()
        } else {
            ip
        };
        let start_time = previous
            .start_time
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| now.clone());
        let mut status = json!({
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", ready_to_start, None),
                condition("Initialized", initialized, Some("ContainersNotInitialized")),
                condition("Ready", initialized && all_ready, Some(if initialized { "ContainersNotReady" } else { "ContainersNotInitialized" })),
                condition("ContainersReady", initialized && all_ready, Some(if initialized { "ContainersNotReady" } else { "ContainersNotInitialized" })),
                condition("PodScheduled", true, None),
            ],
            "hostIP": host_ip,
            "hostIPs": [{ "ip": host_ip }],
            "startTime": start_time,
            "containerStatuses": statuses,
            "qosClass": qos_class(pod),
        });
        if !pod_ip.is_empty() {
            status["podIP"] = json!(pod_ip);
            status["podIPs"] = json!([{ "ip": pod_ip }]);
        }
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        status
    }

    /// Watches the node's eviction signals every [`eviction::MONITOR_INTERVAL`]:
    /// publishes the pressure conditions, evicts the pods above their local storage
    /// limits and, while a threshold is crossed (and no pod was just evicted for its
    /// limits), one pod at a time.
    async fn manage_pressure(self: Arc<Self>) {
        let mut tracker =
            eviction::PressureTracker::new(self.config.eviction_pressure_transition_period);
        let mut images = crate::image_gc::Collector::default();
        let mut grace = eviction::GraceTracker::default();
        let policy = self.config.image_gc.clone();
        loop {
            let memory = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|text| {
                    let total = crate::node::meminfo_value_ki(&text, "MemTotal")? * 1024;
                    Some((total, crate::stats::node_memory(&text)?.working_set_bytes))
                });
            let observed = eviction::observe(&self.config.data_dir, memory);
            let thresholds: Vec<eviction::Threshold> = self
                .config
                .eviction_hard
                .iter()
                .chain(&self.config.eviction_soft)
                .cloned()
                .collect();
            let crossed = eviction::crossed(&thresholds, &observed);
            let conditions: Vec<eviction::Condition> =
                crossed.iter().map(|(t, _)| t.signal.condition()).collect();
            let pressure = tracker.update(&conditions, Instant::now());
            self.pressure.send_if_modified(|published| {
                let changed = *published != pressure;
                if changed {
                    tracing::warn!(conditions = ?pressure.names(), "node pressure changed");
                    *published = pressure;
                }
                changed
            });
            // Unused images go first: when the image filesystem is above the high
            // threshold, or to lift a crossed disk threshold before pods are evicted.
            let mut to_free = observed
                .get(&eviction::Signal::ImagefsAvailable)
                .map_or(0, |fs| policy.bytes_to_free(fs.capacity, fs.available));
            for (threshold, seen) in &crossed {
                if matches!(
                    threshold.signal,
                    eviction::Signal::ImagefsAvailable | eviction::Signal::NodefsAvailable
                ) {
                    to_free = to_free.max(threshold.minimum_of(seen.capacity) - seen.available);
                }
            }
            let mut cri = self.cri.clone();
            let freed = match images.collect(&mut cri, to_free, policy.minimum_age).await {
                Ok(freed) => freed,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "image garbage collection failed"
                    );
                    0
                }
            };
            // Pods above their local storage limits go whatever the pressure; the
            // pressure's eviction waits for the next round.
            if self.evict_over_storage_limits() {
                tokio::time::sleep(eviction::MONITOR_INTERVAL).await;
                continue;
            }
            if let Some((threshold, seen)) = grace.acting(&crossed, Instant::now()).first() {
                let disk = threshold.signal.condition() == eviction::Condition::Disk;
                // After freeing disk space, look again before evicting anyone.
                if !(disk && freed > 0) {
                    self.evict_one(threshold, *seen);
                }
            }
            tokio::time::sleep(eviction::MONITOR_INTERVAL).await;
        }
    }

    /// Chooses the pod to evict for a crossed threshold and hands it to its worker;
    /// nothing while an earlier eviction is still being carried out.
    fn evict_one(self: &Arc<Self>, threshold: &eviction::Threshold, seen: eviction::Observation) {
        if !self.evicted.lock().expect("evicted lock").is_empty() {
            return;
        }
        let snapshot = self.sampler.snapshot();
        let mut usage: HashMap<&str, u64> = HashMap::new();
        for container in snapshot.containers.values() {
            *usage.entry(container.pod_uid.as_str()).or_default() +=
                container.memory.working_set_bytes;
        }
        let pods = self.pods.state();
        let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_evictable(p)).collect();
        let candidates: Vec<eviction::Candidate> = active
            .iter()
            .map(|p| {
                let uid = p.metadata.uid.as_deref().unwrap_or_default();
                eviction::Candidate::of(p, usage.get(uid).copied().unwrap_or(0))
            })
            .collect();
        let Some(victim) = eviction::choose(&candidates, threshold.signal) else {
            return;
        };
        let Some(pod) = active
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(victim.uid.as_str()))
        else {
            return;
        };
        let message = eviction::eviction_message(threshold, seen);
        tracing::warn!(pod = ?pod.metadata.name, namespace = ?pod.metadata.namespace, %message, "evicting a pod");
        let pod_grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        let stop_grace = eviction::stop_grace(
            threshold,
            pod_grace,
            self.config.eviction_max_pod_grace_period,
        );
        self.evicted.lock().expect("evicted lock").insert(
            victim.uid.clone(),
            Eviction {
                message,
                stop_grace,
                disruption_target: true,
            },
        );
        self.wake(pod);
    }

    /// Evicts every running pod above one of its local storage limits (an emptyDir's
    /// sizeLimit, the pod's or a container's ephemeral-storage limit), at once and
    /// without grace, as upstream's eviction manager does; true when any was.
    fn evict_over_storage_limits(self: &Arc<Self>) -> bool {
        let snapshot = self.sampler.snapshot();
        let pods = self.pods.state();
        let mut evicted = self.evicted.lock().expect("evicted lock");
        let mut to_stop = Vec::new();
        for pod in pods.iter().filter(|p| is_evictable(p)) {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if evicted.contains_key(&uid) {
                continue;
            }
            let Some(usage) = crate::stats::storage_usage(&snapshot, &uid) else {
                continue;
            };
            let Some(message) = eviction::local_storage_violation(pod, &usage) else {
                continue;
            };
            tracing::warn!(pod = ?pod.metadata.name, namespace = ?pod.metadata.namespace, %message, "evicting a pod above its local storage limit");
            evicted.insert(
                uid,
                Eviction {
                    message,
                    stop_grace: eviction::IMMEDIATE_STOP_GRACE,
                    disruption_target: false,
                },
            );
            to_stop.push(pod);
        }
        drop(evicted);
        for pod in &to_stop {
            self.wake(pod);
        }
        !to_stop.is_empty()
    }

    /// Fails the pod with reason Evicted: its containers shown terminated, not
    /// ready, and (when the kubelet stopped it) the DisruptionTarget condition.
    async fn write_failed(
        &self,
        pod: &Pod,
        message: &str,
        disrupted: bool,
        state: &mut PodState,
    ) -> Result<()> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let previous = serde_json::to_value(pod.status.clone().unwrap_or_default())?;
        let mut conditions: Vec<Value> = previous["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| {
                !matches!(
                    c["type"].as_str(),
                    Some("Ready" | "ContainersReady" | "DisruptionTarget")
                )
            })
            .collect();
        for kind in ["Ready", "ContainersReady"] {
            conditions.push(json!({ "type": kind, "status": "False", "reason": "PodFailed", "lastProbeTime": null, "lastTransitionTime": now }));
        }
        if disrupted {
            conditions.push(json!({
                "type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                "message": message, "lastProbeTime": null, "lastTransitionTime": now,
            }));
        }
        let terminate = |statuses: &Value| -> Value {
            let mut statuses = statuses.as_array().cloned().unwrap_or_default();
            for status in &mut statuses {
                status["ready"] = json!(false);
                status["started"] = json!(false);
                if let Some(running) = status["state"].get("running").cloned() {
                    status["state"] = json!({ "terminated": {
                        "exitCode": 137, "reason": "Error",
                        "startedAt": running["startedAt"], "finishedAt": now,
                    }});
                }
            }
            Value::Array(statuses)
        };
        let mut status = json!({
            "phase": "Failed",
            "reason": "Evicted",
            "message": message,
            "conditions": conditions,
        });
        if previous["containerStatuses"].is_array() {
            status["containerStatuses"] = terminate(&previous["containerStatuses"]);
        }
        self.write_status(pod, status, state).await
    }

    /// Records why a container waits (reason, message) and, when it has just begun
    /// to wait for that reason, publishes `event` (type, reason, note) about it.
    fn wait(
        &self,
        pod: &Pod,
        state: &mut PodState,
        container: &str,
        (reason, message): (&str, String),
        (type_, event_reason, note): (EventType, &str, String),
    ) {
        let previous = state
            .waiting
            .insert(container.into(), (reason.into(), message));
        if previous.is_none_or(|(old, _)| old != reason) {
            self.event(pod, Some(container), type_, event_reason, note);
        }
    }

    /// Publishes an Event about the pod (or one of its containers) without waiting
    /// for it; a failure to publish is only logged.
    fn event(
        &self,
        pod: &Pod,
        container: Option<&str>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let mut reference = pod.object_ref(&());
        if let Some(name) = container {
            let init = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.name == name));
            let list = if init { "initContainers" } else { "containers" };
            reference.field_path = Some(format!("spec.{list}{{{name}}}"));
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(error) = recorder.publish(&event, &reference).await {
                tracing::debug!(reason = %event.reason, "cannot publish an event: {error}");
            }
        });
    }

    async fn write_status(&self, pod: &Pod, status: Value, state: &mut PodState) -> Result<()> {
        if state.written.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        api.patch_status(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .context("cannot write the pod's status")?;
        state.written = Some(status);
        Ok(())
    }
}

/// What a worker remembers between passes (lost on restart, which is fine: all of it
/// can be rebuilt from the runtime and the API).
#[derive(Default)]
struct PodState {
    /// Why a container is waiting: (reason, message).
    waiting: HashMap<String, (String, String)>,
    crash_backoff: HashMap<String, Backoff>,
    pull_backoff: HashMap<String, Backoff>,
    /// Statuses of containers by id, with the state they were read in.
    status_cache: HashMap<String, (i32, api::ContainerStatus)>,
    sandbox_ip: Option<(String, String)>,
    prober: crate::probes::Prober,
    /// The latest probe verdicts by container name.
    verdicts: HashMap<String, crate::probes::Verdict>,
    /// The last volume set-up error logged (each new one is logged once).
    volume_error: Option<String>,
    /// The last status written, to skip writes that change nothing.
    written: Option<Value>,
    /// Containers whose image this worker has reported pulled or present.
    pulled: std::collections::HashSet<String>,
    /// Whether the ConfigMaps and Secrets the pod uses are watched and cached.
    objects_tracked: bool,
}

struct Backoff {
    delay: Duration,
    until: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    Always,
    OnFailure,
    Never,
}

enum Outcome {
    Running,
    Exited(i32),
    Waiting,
}

struct SandboxInfo {
    id: String,
    config: api::PodSandboxConfig,
    ip: String,
    created: bool,
}

/// The runtime's sandboxes and containers of one pod.
struct RuntimeView {
    sandboxes: Vec<api::PodSandbox>,
    containers: Vec<(api::Container, api::ContainerStatus)>,
}

impl RuntimeView {
    /// Reads the pod's own sandboxes and containers from the runtime (filtered there
    /// by the pod's uid label).
    async fn load(
        cri: &mut Cri,
        uid: &str,
        cache: &mut HashMap<String, (i32, api::ContainerStatus)>,
    ) -> Result<RuntimeView> {
        let labels = HashMap::from([(LABEL_POD_UID.to_string(), uid.to_string())]);
        let sandboxes = cri.list_pod_sandboxes_labelled(labels.clone()).await?;
        let containers = cri.list_containers_labelled(labels).await?;
        Self::from_lists(cri, sandboxes, containers, cache).await
    }

    /// The view of one pod's `sandboxes` and `containers` as listed, with each
    /// container's status (asked for only when its state changed since `cache`
    /// had it).
    async fn from_lists(
        cri: &mut Cri,
        sandboxes: Vec<api::PodSandbox>,
        listed: Vec<api::Container>,
        cache: &mut HashMap<String, (i32, api::ContainerStatus)>,
    ) -> Result<RuntimeView> {
        let mut containers = Vec::new();
        for container in listed {
            let status = match cache.get(&container.id) {
                Some((state, status)) if *state == container.state => status.clone(),
                _ => {
                    let status = cri.container_status(&container.id).await?;
                    cache.insert(container.id.clone(), (container.state, status.clone()));
                    status
                }
            };
            containers.push((container, status));
        }
        let ids: std::collections::HashSet<&str> =
            containers.iter().map(|(c, _)| c.id.as_str()).collect();
        cache.retain(|id, _| ids.contains(id.as_str()));
        Ok(RuntimeView {
            sandboxes,
            containers,
        })
    }

    fn by_name(&self, name: &str) -> impl Iterator<Item = &(api::Container, api::ContainerStatus)> {
        let name = name.to_string();
        self.containers
            .iter()
            .filter(move |(c, _)| c.labels.get(LABEL_CONTAINER_NAME) == Some(&name))
    }

    fn attempt(container: &api::Container) -> u32 {
        container.metadata.as_ref().map(|m| m.attempt).unwrap_or(0)
    }

    fn latest(&self, name: &str) -> Option<&(api::Container, api::ContainerStatus)> {
        self.by_name(name).max_by_key(|(c, _)| Self::attempt(c))
    }

    fn previous(&self, name: &str) -> Option<&(api::Container, api::ContainerStatus)> {
        let latest = Self::attempt(&self.latest(name)?.0);
        self.by_name(name)
            .filter(|(c, _)| Self::attempt(c) < latest)
            .max_by_key(|(c, _)| Self::attempt(c))
    }

    /// Removes exited containers older than the newest two attempts of each name
    /// (the newest dead one stays for lastState and `logs --previous`).
    async fn remove_dead(&self, cri: &mut Cri) {
        let mut by_name: BTreeMap<&str, Vec<&api::Container>> = BTreeMap::new();
        for (c, _) in &self.containers {
            by_name
                .entry(
                    c.labels
                        .get(LABEL_CONTAINER_NAME)
                        .map(String::as_str)
                        .unwrap_or_default(),
                )
                .or_default()
                .push(c);
        }
        for (_, mut list) in by_name {
            list.sort_by_key(|c| std::cmp::Reverse(Self::attempt(c)));
            for old in list.iter().skip(2) {
                if old.state == api::ContainerState::ContainerExited as i32 {
                    let _ = cri.remove_container(&old.id).await;
                }
            }
        }
    }
}

/// Whether the eviction manager may evict the pod: running here, not being deleted,
/// not system-critical.
fn is_evictable(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
        && !eviction::is_critical(pod)
}

fn rfc3339_nanos(nanos: i64) -> Value {
    if nanos <= 0 {
        return Value::Null;
    }
    let time =
        chrono::DateTime::from_timestamp(nanos / 1_000_000_000, (nanos % 1_000_000_000) as u32)
            .unwrap_or_default();
    json!(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Most bytes of a termination message (upstream's limit).
const TERMINATION_MESSAGE_MAX: usize = 4096;
/// Lines of log a FallbackToLogsOnError message takes.
const TERMINATION_LOG_LINES: usize = 80;

fn terminated(status: &api::ContainerStatus, container: &Container) -> Value {
    let reason = if status.reason.is_empty() {
        if status.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string()
    } else {
        status.reason.clone()
    };
    let mut value = json!({
        "exitCode": status.exit_code,
        "reason": reason,
        "startedAt": rfc3339_nanos(status.started_at),
        "finishedAt": rfc3339_nanos(status.finished_at),
        "containerID": format!("containerd://{}", status.id),
    });
    let message = termination_message(status, container);
    if !message.is_empty() {
        value["message"] = json!(message);
    } else if !status.message.is_empty() {
        value["message"] = json!(status.message);
    }
    value
}

/// The container's termination message: its terminationMessagePath file, or with
/// FallbackToLogsOnError and a failure, the end of its log.
fn termination_message(status: &api::ContainerStatus, container: &Container) -> String {
    let path = container
        .termination_message_path
        .as_deref()
        .unwrap_or("/dev/termination-log");
    let from_file = status
        .mounts
        .iter()
        .find(|m| m.container_path == path)
        .and_then(|m| std::fs::read(&m.host_path).ok())
        .map(|bytes| {
            let end = bytes.len().min(TERMINATION_MESSAGE_MAX);
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        })
        .unwrap_or_default();
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if !from_file.is_empty() || !fallback || status.exit_code == 0 {
        return from_file;
    }
    let log = std::fs::read_to_string(&status.log_path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter_map(crate::pods::log_line_text).collect();
    let tail = lines[lines.len().saturating_sub(TERMINATION_LOG_LINES)..].join("\n");
    let start = tail.len().saturating_sub(TERMINATION_MESSAGE_MAX);
    let start = (start..tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(tail.len());
    tail[start..].to_string()
}

/// The text of one CRI log line (`<time> <stream> <F|P> <text>`).
pub fn log_line_text(line: &str) -> Option<&str> {
    let mut parts = line.splitn(4, ' ');
    let (_time, _stream, _tag) = (parts.next()?, parts.next()?, parts.next()?);
    Some(parts.next().unwrap_or(""))
}

fn container_status(
    container: &Container,
    runtime: &RuntimeView,
    state: &PodState,
    default_waiting: &str,
    init: bool,
) -> Value {
    let latest = runtime.latest(&container.name);
    let waiting = state.waiting.get(&container.name);
    let mut value = json!({
        "name": container.name,
        "image": container.image.clone().unwrap_or_default(),
        "imageID": "",
        "ready": false,
        "started": false,
        "restartCount": 0,
        "state": { "waiting": { "reason": default_waiting } },
        "lastState": {},
    });
    let Some((c, status)) = latest else {
        if let Some((reason, message)) = waiting {
            value["state"] = json!({ "waiting": { "reason": reason, "message": message } });
        }
        return value;
    };
    value["containerID"] = json!(format!("containerd://{}", c.id));
    value["imageID"] = json!(c.image_ref);
    value["restartCount"] = json!(RuntimeView::attempt(c));
    let running = c.state == api::ContainerState::ContainerRunning as i32;
    let exited = c.state == api::ContainerState::ContainerExited as i32;
    if running {
        value["state"] = json!({ "running": { "startedAt": rfc3339_nanos(status.started_at) } });
        // Without probes a running container is started and ready (sidecars too).
        let verdict = state.verdicts.get(&container.name);
        value["started"] = json!(verdict.is_none_or(|v| v.started));
        value["ready"] = json!(verdict.is_none_or(|v| v.ready));
        if let Some((_, previous)) = runtime.previous(&container.name) {
            value["lastState"] = json!({ "terminated": terminated(previous, container) });
        }
    } else if exited {
        match waiting {
            Some((reason, message)) => {
                value["state"] = json!({ "waiting": { "reason": reason, "message": message } });
                value["lastState"] = json!({ "terminated": terminated(status, container) });
            }
            None => {
                value["state"] = json!({ "terminated": terminated(status, container) });
                if let Some((_, previous)) = runtime.previous(&container.name) {
                    value["lastState"] = json!({ "terminated": terminated(previous, container) });
                }
            }
        }
    } else if let Some((reason, message)) = waiting {
        value["state"] = json!({ "waiting": { "reason": reason, "message": message } });
    }
    if init && !running {
        value["started"] = json!(false);
    }
    value
}

/// Upstream's getPhase over the main containers' statuses.
fn phase(statuses: &[Value], policy: &str) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for status in statuses {
        let state = &status["state"];
        if state.get("running").is_some() {
            running += 1;
        } else if let Some(term) = state.get("terminated") {
            stopped += 1;
            if term["exitCode"] == json!(0) {
                succeeded += 1;
            }
        } else if status["lastState"].get("terminated").is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if policy == "OnFailure" {
            "Running"
        } else {
            "Failed"
        }
    } else {
        "Pending"
    }
}

fn namespace_options(spec: &k8s_openapi::api::core::v1::PodSpec) -> api::NamespaceOption {
    let mode = |host: Option<bool>, shared: api::NamespaceMode| {
        if host.unwrap_or(false) {
            api::NamespaceMode::Node as i32
        } else {
            shared as i32
        }
    };
    let pid_shared = if spec.share_process_namespace.unwrap_or(false) {
        api::NamespaceMode::Pod
    } else {
        api::NamespaceMode::Container
    };
    api::NamespaceOption {
        network: mode(spec.host_network, api::NamespaceMode::Pod),
        pid: mode(spec.host_pid, pid_shared),
        ipc: mode(spec.host_ipc, api::NamespaceMode::Pod),
        ..Default::default()
    }
}

/// Guaranteed, Burstable or BestEffort, as upstream's GetPodQOS.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let containers: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for container in &containers {
        let resources = container.resources.clone().unwrap_or_default();
        let requests = resources.requests.unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        for name in ["cpu", "memory"] {
            let request = requests.get(name).or_else(|| limits.get(name));
            let limit = limits.get(name);
            if request.is_some_and(|q| parse_quantity(&q.0).unwrap_or(0.0) > 0.0) || limit.is_some()
            {
                any = true;
            }
            match (request, limit) {
                (Some(r), Some(l)) if parse_quantity(&r.0) == parse_quantity(&l.0) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The pod's cgroup under the cgroupfs driver: /kubepods[/burstable|/besteffort]/pod<uid>.
fn cgroup_parent(pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    match qos_class(pod) {
        "Guaranteed" => format!("/kubepods/pod{uid}"),
        "Burstable" => format!("/kubepods/burstable/pod{uid}"),
        _ => format!("/kubepods/besteffort/pod{uid}"),
    }
}

/// Removes a pod's (empty) cgroup directories, whatever its QoS class was, on
/// cgroup v1 (one hierarchy per controller) and v2.
pub fn remove_pod_cgroups(uid: &str) {
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let roots: Vec<PathBuf> = roots
        .flatten()
        .map(|e| e.path())
        .chain([PathBuf::from("/sys/fs/cgroup")])
        .collect();
    for qos in ["", "burstable/", "besteffort/"] {
        for root in &roots {
            let _ = std::fs::remove_dir(root.join(format!("kubepods/{qos}pod{uid}")));
        }
    }
}

/// CPU shares/quota and the memory limit of a container, as upstream computes them.
fn container_resources(pod: &Pod, container: &Container) -> api::LinuxContainerResources {
    let resources = container.resources.clone().unwrap_or_default();
    let requests = resources.requests.unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    let milli = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.and_then(|q| parse_quantity(&q.0))
            .map(|v| (v * 1000.0).round() as i64)
    };
    let cpu_request = milli(requests.get("cpu").or_else(|| limits.get("cpu")));
    let cpu_limit = milli(limits.get("cpu"));
    let memory_limit = limits
        .get("memory")
        .and_then(|q| parse_quantity(&q.0))
        .map(|v| v as i64);
    let cpu_shares = cpu_request.map(|m| (m * 1024 / 1000).max(2)).unwrap_or(2);
    let (cpu_period, cpu_quota) = match cpu_limit {
        Some(m) => (100_000, (m * 100_000 / 1000).max(1000)),
        None => (0, 0),
    };
    let oom_score_adj = match qos_class(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let total = crate::node::meminfo_ki("MemTotal").unwrap_or(1) as f64 * 1024.0;
            let request = requests
                .get("memory")
                .and_then(|q| parse_quantity(&q.0))
                .unwrap_or(0.0);
            let score = 1000 - (1000.0 * request / total) as i64;
            score.clamp(3, 999)
        }
    };
    api::LinuxContainerResources {
        cpu_period,
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes: memory_limit.unwrap_or(0),
        oom_score_adj,
        ..Default::default()
    }
}

/// A resource quantity ("250m", "64Mi", "1.5", "2e3") as a number of base units.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// A field of the pod for fieldRef env and downwardAPI volumes.
pub fn field_value(pod: &Pod, path: &str) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let map_entry = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let render_map = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => render_map(&meta.labels),
        "metadata.annotations" => render_map(&meta.annotations),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" => status.host_ip.unwrap_or_default(),
        "status.podIP" => status.pod_ip.unwrap_or_default(),
        other => {
            if let Some(key) = other
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                map_entry(&meta.labels, key)
            } else if let Some(key) = other
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                map_entry(&meta.annotations, key)
            } else {
                bail!("fieldRef {other:?} is not a supported field");
            }
        }
    })
}

/// The container's environment in order: envFrom first, then env, with $(VAR)
/// references to earlier variables expanded.
fn resolve_env(
    pod: &Pod,
    container: &Container,
    objects: &dyn volumes::Objects,
    pod_ip: &str,
    service_env: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, key: String, value: String| {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(cm_ref) = &source.config_map_ref {
            match objects.config_map(namespace, &cm_ref.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if cm_ref.optional == Some(true) => {}
                None => bail!("configmap {:?} not found", cm_ref.name),
            }
        }
        if let Some(secret_ref) = &source.secret_ref {
            match objects.secret(namespace, &secret_ref.name) {
                Some(secret) => {
                    for (k, v) in secret.data.iter().flatten() {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if secret_ref.optional == Some(true) => {}
                None => bail!("secret {:?} not found", secret_ref.name),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            // The container's own variables win over the Services'.
            let vars: HashMap<&str, &str> = service_env
                .iter()
                .chain(env.iter())
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            expand(value, &vars)
        } else if let Some(from) = &var.value_from {
            if let Some(key_ref) = &from.config_map_key_ref {
                let optional = key_ref.optional == Some(true);
                match objects.config_map(namespace, &key_ref.name) {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => bail!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            key_ref.key,
                            key_ref.name
                        ),
                    },
                    None if optional => continue,
                    None => bail!("configmap {:?} not found", key_ref.name),
                }
            } else if let Some(key_ref) = &from.secret_key_ref {
                let optional = key_ref.optional == Some(true);
                match objects.secret(namespace, &key_ref.name) {
                    Some(secret) => match secret.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => bail!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            key_ref.key,
                            key_ref.name
                        ),
                    },
                    None if optional => continue,
                    None => bail!("secret {:?} not found", key_ref.name),
                }
            } else if let Some(field) = &from.field_ref {
                if field.field_path == "status.podIP" {
                    pod_ip.to_string()
                } else {
                    field_value(pod, &field.field_path)?
                }
            } else if let Some(resource) = &from.resource_field_ref {
                resource_value(pod, container, resource)?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, var.name.clone(), value);
    }
    for (key, value) in service_env {
        if !env.iter().any(|(k, _)| k == key) {
            env.push((key.clone(), value.clone()));
        }
    }
    Ok(env)
}

fn resource_value(
    pod: &Pod,
    container: &Container,
    selector: &k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> Result<String> {
    let target = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == name))
            .with_context(|| {
                format!("resourceFieldRef names container {name:?}, which the pod does not have")
            })?,
        None => container,
    };
    let resources = target.resources.clone().unwrap_or_default();
    let (kind, name) = selector.resource.split_once('.').with_context(|| {
        format!(
            "resourceFieldRef {:?} is not like limits.cpu",
            selector.resource
        )
    })?;
    let map = if kind == "limits" {
        resources.limits
    } else {
        resources.requests
    }
    .unwrap_or_default();
    let value = match map.get(name).and_then(|q| parse_quantity(&q.0)) {
        Some(v) => v,
        // Without a limit, upstream reports the node's allocatable.
        None if name == "cpu" => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64,
        None if name == "memory" => {
            crate::node::meminfo_ki("MemTotal").unwrap_or(0) as f64 * 1024.0
        }
        None => 0.0,
    };
    let divisor = selector
        .divisor
        .as_ref()
        .and_then(|d| parse_quantity(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(((value / divisor).ceil() as i64).to_string())
}

/// Expands `$(VAR)` from `vars`; `$$` escapes; unknown references stay as written.
pub fn expand(input: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'('
                && let Some(end) = input[i + 2..].find(')')
            {
                let name = &input[i + 2..i + 2 + end];
                match vars.get(name) {
                    Some(value) => out.push_str(value),
                    None => out.push_str(&input[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = input[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The pod's /etc/hosts as upstream's kubelet writes it: localhost entries, the
/// pod's own name (with its subdomain's FQDN), then the hostAliases. With
/// hostNetwork the host's file is the base.
fn hosts_file_contents(pod: &Pod, pod_ip: &str) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = String::from("# Kubernetes-managed hosts file.\n");
    if spec.host_network.unwrap_or(false) {
        out.push_str(&std::fs::read_to_string("/etc/hosts").unwrap_or_default());
    } else {
        out.push_str(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        let hostname = spec
            .hostname
            .clone()
            .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
        if !pod_ip.is_empty() {
            match spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
                Some(subdomain) => {
                    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
                    out.push_str(&format!(
                        "{pod_ip}\t{hostname}.{subdomain}.{namespace}.svc.cluster.local\t{hostname}\n"
                    ));
                }
                None => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
            }
        }
    }
    let aliases = spec.host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", alias.ip));
        }
    }
    out
}

fn termination_file(
    pods_dir: &std::path::Path,
    uid: &str,
    container: &str,
    attempt: u32,
) -> PathBuf {
    pods_dir
        .join(uid)
        .join("containers")
        .join(container)
        .join(format!("{attempt}-termination-log"))
}

fn human(delay: Duration) -> String {
    let secs = delay.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m0s", secs / 60)
    } else if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_upstream() {
        let vars = HashMap::from([("A", "1"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &vars), "1-two");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(MISSING) $(A", &vars), "$(MISSING) $(A");
        assert_eq!(expand("plain $ text é", &vars), "plain $ text é");
    }

    #[test]
    fn hosts_file_has_fqdn_and_aliases() {
        let p = pod(
            json!({"metadata": {"name": "web-0", "namespace": "ns"}, "spec": {
            "hostname": "web-0", "subdomain": "web", "containers": [{"name": "c"}],
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]}}),
        );
        let hosts = hosts_file_contents(&p, "10.42.0.5");
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"));
        assert!(
            hosts.contains("10.42.0.5\tweb-0.web.ns.svc.cluster.local\tweb-0\n"),
            "{hosts}"
        );
        assert!(
            hosts.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n")
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(parse_quantity("12xyz"), None);
    }

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn qos_classes() {
        let best = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(qos_class(&best), "BestEffort");
        let guaranteed = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]}}),
        );
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let burstable = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
            "resources": {"requests": {"cpu": "100m"}}}]}}),
        );
        assert_eq!(qos_class(&burstable), "Burstable");
        let resources = container_resources(
            &guaranteed,
            &guaranteed.spec.as_ref().unwrap().containers[0],
        );
        assert_eq!(resources.cpu_quota, 50_000);
        assert_eq!(resources.cpu_period, 100_000);
        assert_eq!(resources.cpu_shares, 512);
        assert_eq!(resources.memory_limit_in_bytes, 64 << 20);
    }

    #[test]
    fn phases() {
        let running = json!({"state": {"running": {}}, "lastState": {}});
        let done = json!({"state": {"terminated": {"exitCode": 0}}, "lastState": {}});
        let failed = json!({"state": {"terminated": {"exitCode": 1}}, "lastState": {}});
        let backoff =
            json!({"state": {"waiting": {}}, "lastState": {"terminated": {"exitCode": 1}}});
        let waiting = json!({"state": {"waiting": {}}, "lastState": {}});
        assert_eq!(phase(std::slice::from_ref(&running), "Always"), "Running");
        assert_eq!(phase(std::slice::from_ref(&done), "Never"), "Succeeded");
        assert_eq!(phase(std::slice::from_ref(&failed), "Never"), "Failed");
        assert_eq!(phase(&[failed], "OnFailure"), "Running");
        assert_eq!(phase(&[backoff], "Always"), "Running");
        assert_eq!(phase(&[waiting, running], "Always"), "Pending");
        assert_eq!(phase(&[done], "Always"), "Running");
    }

    #[test]
    fn env_order_expansion_and_missing_configmap() {
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{"name": "c",
            "env": [
                {"name": "A", "value": "x"},
                {"name": "B", "value": "$(A)-y"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ]}]}}),
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = resolve_env(&p, c, &volumes::TestObjects::default(), "10.0.0.1", &[]).unwrap();
        assert_eq!(
            env,
            vec![
                ("A".into(), "x".into()),
                ("B".into(), "x-y".into()),
                ("POD".into(), "p".into())
            ]
        );
        let missing = pod(
            json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{"name": "c",
            "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]}]}}),
        );
        let c = &missing.spec.as_ref().unwrap().containers[0];
        let error =
            resolve_env(&missing, c, &volumes::TestObjects::default(), "", &[]).unwrap_err();
        assert_eq!(error.to_string(), "configmap \"nope\" not found");
    }

    #[test]
    fn service_variables_follow_the_containers_own_and_expand() {
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{"name": "c",
            "env": [
                {"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
                {"name": "WEB_SERVICE_PORT", "value": "mine"},
            ]}]}}),
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        let services = [
            (
                "KUBERNETES_SERVICE_HOST".to_string(),
                "10.43.0.1".to_string(),
            ),
            ("KUBERNETES_SERVICE_PORT".to_string(), "443".to_string()),
            ("WEB_SERVICE_PORT".to_string(), "80".to_string()),
        ];
        let env = resolve_env(&p, c, &volumes::TestObjects::default(), "", &services).unwrap();
        assert_eq!(
            env,
            vec![
                ("API".into(), "https://10.43.0.1:443".into()),
                ("WEB_SERVICE_PORT".into(), "mine".into()),
                ("KUBERNETES_SERVICE_HOST".into(), "10.43.0.1".into()),
                ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
            ]
        );
    }
}
