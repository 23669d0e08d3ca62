//! `krust-bench controllers`: a Deployment of many replicas on hollow nodes, from
//! creation to every pod Ready, then a rolling update of it, through the
//! controllers running inside a real `krust server`.
//!
//! The API write count is the store's revision delta (every create, update, patch
//! and delete is one revision): it includes the hollow kubelets' binds and pod
//! status writes and the Events (rate-limited per object, client-go's spam filter).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use krust_e2e::TestServer;
use krust_e2e::hollow::{HollowNodes, HollowOptions, NodeTemplate};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const NAMESPACE: &str = "bench-controllers";
const POLL: Duration = Duration::from_millis(20);
const TIMEOUT: Duration = Duration::from_secs(600);

/// The figures of one phase.
struct Phase {
    seconds: f64,
    all_created_seconds: f64,
    writes: u64,
    events: usize,
}

/// The store's current revision.
async fn revision(client: &kube::Client) -> Result<u64> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let list = namespaces
        .list_metadata(&ListParams::default().limit(1))
        .await?;
    Ok(list.metadata.resource_version.unwrap_or_default().parse()?)
}

/// Events reported so far: Event objects, each counted as often as its series says.
async fn event_count(client: &kube::Client) -> Result<usize> {
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let list = events.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .map(|e| e.series.as_ref().map_or(1, |s| s.count.max(1) as usize))
        .sum())
}

/// Waits until `d` reports `replicas` updated, available and present, at its
/// generation; returns the seconds until every pod existed and until the end.
async fn wait_rolled_out(
    api: &Api<Deployment>,
    replicas: i32,
    start: Instant,
) -> Result<(f64, f64)> {
    let mut all_created = None;
    loop {
        ensure!(
            start.elapsed() < TIMEOUT,
            "the rollout did not finish in {TIMEOUT:?}"
        );
        let d = api.get_status("bench").await?;
        let status = d.status.unwrap_or_default();
        let observed = status.observed_generation >= d.metadata.generation;
        if all_created.is_none() && observed && status.updated_replicas == Some(replicas) {
            all_created = Some(start.elapsed().as_secs_f64());
        }
        if observed
            && status.updated_replicas == Some(replicas)
            && status.available_replicas == Some(replicas)
            && status.replicas == Some(replicas)
        {
            let done = start.elapsed().as_secs_f64();
            return Ok((all_created.unwrap_or(done), done));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs the benchmark and prints its Markdown table.
pub async fn run(replicas: i32, nodes: usize) -> Result<()> {
    let server = TestServer::start();
    let client = server.client().await;
    let templates = (0..nodes)
        .map(|i| NodeTemplate::new(format!("hollow-{i}")))
        .collect();
    let _nodes = HollowNodes::start(
        client.clone(),
        templates,
        HollowOptions {
            bind_pending: true,
            ..Default::default()
        },
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}},
                         "spec": {"containers": [{"name": "app", "image": "registry.local/app:1"}]}},
        },
    }))?;

    eprintln!("== {replicas} replicas on {nodes} hollow nodes: create");
    let before = revision(&client).await?;
    let start = Instant::now();
    api.create(&PostParams::default(), &deployment).await?;
    let (created, ready) = wait_rolled_out(&api, replicas, start).await?;
    let after = revision(&client).await?;
    let create = Phase {
        seconds: ready,
        all_created_seconds: created,
        writes: after - before,
        events: event_count(&client).await?,
    };

    eprintln!("== rolling update (25% surge, 25% unavailable)");
    let events_before = event_count(&client).await?;
    let start = Instant::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.local/app:2"}]}}}});
    api.patch("bench", &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    let (created, done) = wait_rolled_out(&api, replicas, start).await?;
    let end = revision(&client).await?;
    let update = Phase {
        seconds: done,
        all_created_seconds: created,
        writes: end - after,
        events: event_count(&client).await? - events_before,
    };

    println!("| figure | create: 0 -> {replicas} Ready | rolling update of {replicas} |");
    println!("| --- | --- | --- |");
    println!(
        "| until every new pod exists (s) | {:.2} | {:.2} |",
        create.all_created_seconds, update.all_created_seconds
    );
    println!(
        "| until every pod is Ready / rollout complete (s) | {:.2} | {:.2} |",
        create.seconds, update.seconds
    );
    println!(
        "| API writes (store revisions) | {} | {} |",
        create.writes, update.writes
    );
    println!(
        "| Events reported (series counted) | {} | {} |",
        create.events, update.events
    );
    println!(
        "| writes per replica | {:.2} | {:.2} |",
        create.writes as f64 / f64::from(replicas),
        update.writes as f64 / f64::from(replicas)
    );
    Ok(())
}
