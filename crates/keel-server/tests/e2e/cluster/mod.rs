//! Clusters: several real `keel` binaries on one throwaway PostgreSQL. Work is shared, a node
//! SIGKILLed mid-load loses nothing, an idempotency key is claimed once across nodes, conditional
//! KV increments through two nodes all apply once (`increments.rs`), and a database outage
//! answers 503 and then heals without restarting anything (`outage.rs`), and a node killed is
//! reported lost on `keel.system` once (`nodes.rs`).

use std::process::Child;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_store::pg_testkit::fresh_database;
use serde_json::Value;

mod access;
mod increments;
mod nodes;
mod outage;
mod regions;
mod regions_active;

use crate::crash::{free_port, spawn_keel, wait_ready};
use crate::load::{submit_many, wait_all_succeeded};
use crate::support::{eventually, eventually_or_why, get_json, post_json, request, Functions};

/// `n` nodes on `database`, each running `functions` (TOML); killed when dropped.
struct Cluster {
    nodes: Vec<(String, Child)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(database: &str, functions: &str, n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("keel.toml");
        std::fs::write(&config, format!("[storage]\nurl = \"{database}\"\n\n{functions}")).unwrap();
        let mut nodes = Vec::new();
        for i in 0..n {
            let port = free_port();
            let base = format!("http://127.0.0.1:{port}");
            let mut child = spawn_keel(&config, port, &dir.path().join(format!("node-{i}.log")));
            wait_ready(&base, &mut child).await;
            nodes.push((base, child));
        }
        Self { nodes, _dir: dir }
    }

    fn url(&self, i: usize) -> &str {
        &self.nodes[i].0
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_3000_invocations_and_lose_none_when_one_is_sigkilled() {
    let Some(database) = fresh_database().await else { return };
    let (fns, addr) = Functions::start().await;
    let functions = format!(
        "[functions.work]\nurl = \"http://{addr}/slow?ms=20\"\nconcurrency = 16\ntimeout = \"5s\"\n\
         retry = {{ max_attempts = 10, initial = \"10ms\", max = \"100ms\" }}\n"
    );
    let mut cluster = Cluster::start(&database, &functions, 3).await;
    let started = Instant::now();
    let submitting: Vec<_> = (0..3)
        .map(|i| {
            let base = cluster.url(i).to_string();
            tokio::spawn(async move { submit_many(&base, "work", 1000).await })
        })
        .collect();
    // SIGKILL node 1 midway: some of its submissions were accepted, some of its attempts are
    // in flight, the rest of its submissions fail to connect (and so were never accepted).
    eventually("600 successes before the kill", Duration::from_secs(60), || async {
        (fns.successes().len() >= 600).then_some(())
    })
    .await;
    let victim = &mut cluster.nodes[1].1;
    victim.kill().unwrap();
    victim.wait().unwrap();
    let mut accepted = Vec::new();
    for task in submitting {
        accepted.extend(task.await.unwrap());
    }
    assert!(accepted.len() > 2000, "only {} accepted", accepted.len());

    let succeeded = wait_all_succeeded(cluster.url(0), "work", &accepted, Duration::from_secs(120)).await;
    let took = started.elapsed();
    // What the contract guarantees: every accepted invocation succeeded, none was lost. An
    // attempt cut off by the kill may have reached the function before the node died; it then
    // ran again elsewhere, so the function may see a few extra calls — at most what the killed
    // node held: `concurrency` calls in flight plus `concurrency` answered attempts awaiting
    // their commit (a slot is freed when the function answers). A 202 lost in the kill may add a
    // few invocations Keel ran but the client never heard of.
    let successes = fns.successes();
    let unseen: Vec<_> = accepted.iter().filter(|id| !successes.contains_key(*id)).collect();
    assert!(unseen.is_empty(), "the function never completed {unseen:?}");
    let repeated: usize = successes.values().map(|n| n - 1).sum();
    assert!(
        repeated <= 2 * 16,
        "{repeated} invocations ran twice; at most the killed node's 16 in flight and 16 awaiting their commit may"
    );
    assert!(succeeded.len() <= accepted.len() + 64, "{} succeeded for {} accepted", succeeded.len(), accepted.len());
    eprintln!(
        "3 nodes, one SIGKILLed: {} accepted, {} succeeded, {repeated} re-run after the kill, in {took:?}",
        accepted.len(),
        succeeded.len()
    );

    let (_, _, view) = get_json(&format!("{}/v1/cluster", cluster.url(0))).await;
    let nodes = view["items"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{view}");
    let dead: Vec<&Value> = nodes.iter().filter(|n| n["alive"] == false).collect();
    assert_eq!(dead.len(), 1, "the killed node is reported dead: {view}");
    assert_eq!(dead[0]["leases"], 0, "and holds nothing any more: {view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sent_to_two_nodes_at_once_runs_the_function_once() {
    let Some(database) = fresh_database().await else { return };
    let (fns, addr) = Functions::start().await;
    let functions = format!("[functions.pay]\nurl = \"http://{addr}/slow?ms=200\"\nconcurrency = 64\n");
    let cluster = Cluster::start(&database, &functions, 2).await;
    // 30 keys, each sent to both nodes at the same instant, both asking to wait for the result.
    let mut calls = Vec::new();
    for k in 0..30 {
        for node in 0..2 {
            let url = format!("{}/v1/functions/pay/invoke", cluster.url(node));
            let key = format!("\"payment-{k}\"");
            calls.push(tokio::spawn(async move {
                let headers = [("content-type", "application/json"), ("idempotency-key", &key), ("prefer", "wait=20")];
                (k, request("POST", &url, &headers, format!("{{\"payment\":{k}}}")).await)
            }));
        }
    }
    let mut bodies: Vec<Vec<Bytes>> = vec![Vec::new(); 30];
    for call in calls {
        let (k, (status, _, body)) = call.await.unwrap();
        assert_eq!(status, 200, "key {k}: {}", String::from_utf8_lossy(&body));
        bodies[k].push(body);
    }
    for (k, pair) in bodies.iter().enumerate() {
        assert_eq!(pair[0], pair[1], "key {k}: both nodes answer the same stored response");
    }
    let ran: Vec<usize> = (0..30)
        .map(|k| fns.calls().iter().filter(|c| c.body == format!("{{\"payment\":{k}}}").as_bytes()).count())
        .collect();
    assert_eq!(ran, vec![1; 30], "each key ran the function exactly once across both nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_keeps_its_leases_until_its_attempts_finish() {
    let Some(database) = fresh_database().await else { return };
    let (fns, addr) = Functions::start().await;
    // Longer than the node timeout plus a sweep: were the heartbeat to stop as the drain begins,
    // the other node would take the lease back and run the invocation again meanwhile.
    let functions = format!("[functions.long]\nurl = \"http://{addr}/slow?ms=24000\"\ntimeout = \"60s\"\n");
    let mut cluster = Cluster::start(&database, &functions, 2).await;
    let (status, _, accepted) = post_json(&format!("{}/v1/functions/long/invocations", cluster.url(0)), "{}").await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();
    let url = format!("{}/v1/invocations/{id}", cluster.url(0));
    eventually_or_why("the invocation to start", Duration::from_secs(10), || async {
        let (_, _, inv) = get_json(&url).await;
        if inv["status"] == "running" {
            Ok(())
        } else {
            Err(inv.to_string())
        }
    })
    .await;
    let draining = &mut cluster.nodes[0].1;
    let status = std::process::Command::new("kill").args(["-TERM", &draining.id().to_string()]).status().unwrap();
    assert!(status.success());
    let url = format!("{}/v1/cluster", cluster.url(1));
    eventually_or_why("the other node to learn of the drain", Duration::from_secs(5), || async {
        let (_, _, view) = get_json(&url).await;
        let items = view["items"].as_array().unwrap();
        let seen = items.iter().any(|n| n["this_node"] == false && n["draining"] == true && n["alive"] == true);
        if seen {
            Ok(())
        } else {
            Err(view.to_string())
        }
    })
    .await;
    let draining = &mut cluster.nodes[0].1;
    let exit = eventually("the draining node to stop", Duration::from_secs(45), || {
        let exit = draining.try_wait().unwrap();
        async move { exit }
    })
    .await;
    assert!(exit.success(), "drained and exited cleanly: {exit}");
    let (_, _, inv) = get_json(&format!("{}/v1/invocations/{id}", cluster.url(1))).await;
    assert_eq!(inv["status"], "succeeded", "the draining node recorded its attempt: {inv}");
    assert_eq!(inv["attempts"].as_array().unwrap().len(), 1, "nobody took it over meanwhile: {inv}");
    assert_eq!(fns.calls_for(&id).len(), 1, "the function ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_through_one_node_holds_on_the_other_until_resumed_there() {
    let Some(database) = fresh_database().await else { return };
    let (fns, addr) = Functions::start().await;
    let functions = format!("[functions.held]\nurl = \"http://{addr}/ok\"\n");
    let cluster = Cluster::start(&database, &functions, 2).await;
    let on = |i: usize| format!("{}/v1/functions/held", cluster.url(i));
    let (status, _, f) = post_json(&format!("{}/pause", on(0)), "").await;
    assert_eq!((status, f["paused"].as_bool()), (200, Some(true)));
    // Work queued through node 0 is leased by no node from the moment the pause is stored.
    let mut ids = Vec::new();
    let (status, _, body) = post_json(&format!("{}/invocations", on(0)), "{}").await;
    assert_eq!(status, 202);
    ids.push(body["id"].as_str().unwrap().to_string());
    // The other node learns of it within a second: it then holds what it admits and refuses
    // sync calls.
    crate::support::eventually("node 1 sees the pause", Duration::from_secs(5), || async {
        let (_, _, f) = get_json(&on(1)).await;
        (f["paused"] == true).then_some(())
    })
    .await;
    let (status, _, body) = post_json(&format!("{}/invocations", on(1)), "{}").await;
    assert_eq!(status, 202);
    ids.push(body["id"].as_str().unwrap().to_string());
    let (status, _, body) = post_json(&format!("{}/invoke", on(1)), "{}").await;
    assert_eq!((status, body["type"].as_str()), (503, Some("urn:keel:problem:function-paused")));
    let (_, _, f) = get_json(&on(1)).await;
    assert_eq!(f["queued"].as_u64(), Some(2), "{f}");
    assert!(fns.calls().is_empty(), "nothing ran while paused: {:?}", fns.calls().len());
    let (status, _, _) = post_json(&format!("{}/resume", on(1)), "").await;
    assert_eq!(status, 200);
    for id in &ids {
        crate::support::eventually("the held invocations run", Duration::from_secs(10), || async {
            let (_, _, inv) = get_json(&format!("{}/v1/invocations/{id}", cluster.url(0))).await;
            (inv["status"] == "succeeded").then_some(())
        })
        .await;
    }
    crate::support::eventually("node 0 serves sync calls again", Duration::from_secs(5), || async {
        (post_json(&format!("{}/invoke", on(0)), "{}").await.0 == 200).then_some(())
    })
    .await;
}
