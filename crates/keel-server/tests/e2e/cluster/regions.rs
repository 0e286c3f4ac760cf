//! Regions, active-passive: region `eu` on a PostgreSQL primary, region `us` on a streaming
//! replica of it with synchronous commits. Under load, eu's Keel nodes and its PostgreSQL are
//! SIGKILLed; `keel region promote` makes us the primary. Every acknowledged invocation then
//! completes in us, each of its KV effects applied once (a conditional counter counts exactly);
//! an Idempotency-Key used in eu replays its answer in us; and an eu node started again on its
//! old database finds itself fenced: it admits nothing, dispatches nothing, and writes the new
//! epoch into its own database.
//!
//! And with asynchronous replication and `failover_after`: the standby promotes itself once the
//! primary stops answering, and what the primary acknowledged but never shipped is counted and
//! said (at promotion, by the replica's last replayed commit), never silently dropped.

use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::Response;
use keel_store::pg_testkit::{own_cluster, PgCluster};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::crash::{free_port, spawn_keel, wait_ready};
use crate::load::{all_with_status, submit_many, wait_all_succeeded};
use crate::support::{eventually, get_json, request, send};

/// The function both regions call: a conditional increment of `counters/hits`, read from the
/// Keel API the test points it at, and a count of calls per region (`/count/{region}`).
#[derive(Clone, Default)]
struct Counter {
    keel: Arc<Mutex<String>>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Counter {
    fn calls_from(&self, region: &str) -> usize {
        self.calls.lock().unwrap().iter().filter(|r| *r == region).count()
    }
}

async fn count(State(counter): State<Counter>, Path(region): Path<String>) -> Response {
    counter.calls.lock().unwrap().push(region);
    let base = counter.keel.lock().unwrap().clone();
    let read = hyper::Request::get(format!("{base}/v1/kv/counters/hits")).body(Default::default()).unwrap();
    // Keel may be gone (the test kills it): a transient failure, retried.
    super::increments::increment_after(send(read).await.ok())
}

/// One region's Keel nodes on one config; killed when dropped.
struct Region {
    nodes: Vec<(String, Child)>,
    config: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Region {
    fn configure(database: &str, name: &str, role: &str, peer: (&str, &str), function: &str) -> Self {
        Self::configure_with(database, name, role, peer, function, "")
    }

    /// [`configure`](Self::configure) with more `[region]` lines (`failover_after = "2s"`).
    fn configure_with(database: &str, name: &str, role: &str, peer: (&str, &str), function: &str, more: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("keel.toml");
        let toml = format!(
            "[storage]\nurl = \"{database}\"\n\n[region]\nname = \"{name}\"\nrole = \"{role}\"\n\
             peers = {{ {} = \"{}\" }}\n{more}\n[functions.count]\nurl = \"{function}/count/{name}\"\nconcurrency = 4\n\
             retry = {{ max_attempts = 200, initial = \"5ms\", max = \"50ms\", jitter = \"full\" }}\n",
            peer.0, peer.1
        );
        std::fs::write(&config, toml).unwrap();
        Self { nodes: Vec::new(), config, dir }
    }

    /// Starts a node on `port`; waits until it answers `/readyz` with 200 (`ready` or `standby`).
    async fn start(&mut self, port: u16) -> String {
        let base = format!("http://127.0.0.1:{port}");
        let log = self.dir.path().join(format!("node-{port}.log"));
        let mut child = spawn_keel(&self.config, port, &log);
        wait_ready(&base, &mut child).await;
        self.nodes.push((base.clone(), child));
        base
    }

    fn kill_all(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes.clear();
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Starts the function both regions call; returns its base URL.
async fn serve_counter(counter: &Counter) -> String {
    let app = axum::Router::new().route("/count/{region}", axum::routing::post(count)).with_state(counter.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let function = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    function
}

/// eu's PostgreSQL cluster with a database, and us's: a streaming replica of it.
struct Clusters {
    eu_pg: PgCluster,
    us_pg: PgCluster,
    /// The database's URL on eu.
    database: String,
    db_name: String,
}

/// [`Clusters`], or `None` when PostgreSQL cannot start here (outside CI).
async fn primary_and_replica() -> Option<Clusters> {
    let eu_pg = own_cluster()?;
    let database = eu_pg.create_database().await.unwrap();
    let db_name = database.rsplit('/').next().unwrap().to_owned();
    let us_pg = PgCluster::replica_of(&eu_pg).expect("the us replica");
    Some(Clusters { eu_pg, us_pg, database, db_name })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_region_promoted_after_the_primary_dies_loses_nothing_and_fences_the_old_primary() {
    let Some(Clusters { eu_pg, us_pg, database, db_name }) = primary_and_replica().await else { return };
    let us_database = us_pg.url(&db_name);
    eu_pg.require_sync_standby().await.unwrap();

    let counter = Counter::default();
    let function = serve_counter(&counter).await;

    let (eu_ports, us_port) = ([free_port(), free_port()], free_port());
    let us_url = format!("http://127.0.0.1:{us_port}");
    let eu_url = format!("http://127.0.0.1:{}", eu_ports[0]);
    let mut eu = Region::configure(&database, "eu", "primary", ("us", &us_url), &function);
    let mut us = Region::configure(&us_database, "us", "standby", ("eu", &eu_url), &function);
    let eu_a = eu.start(eu_ports[0]).await;
    let eu_b = eu.start(eu_ports[1]).await;
    *counter.keel.lock().unwrap() = eu_a.clone();
    // The us node opens its replica once eu created the schema (the first eu node did).
    let us_node = us.start(us_port).await;

    // The standby serves reads and refuses writes, naming the primary.
    let (_, _, region) = get_json(&format!("{us_node}/v1/region")).await;
    assert_eq!((region["standing"].as_str(), region["primary"].as_str()), (Some("standby"), Some("eu")), "{region}");
    assert_eq!(region["epoch"], 1, "{region}");
    assert_eq!(get_json(&format!("{us_node}/readyz")).await.2["status"], "standby");
    let (status, _, refused) = request("POST", &format!("{us_node}/v1/functions/count/invocations"), &[], "{}").await;
    let refused: Value = serde_json::from_slice(&refused).unwrap();
    assert_eq!((status, refused["type"].as_str()), (503, Some("urn:keel:problem:standby")), "{refused}");
    assert_eq!(
        (refused["primary_region"].as_str(), refused["primary_url"].as_str()),
        (Some("eu"), Some(eu_url.as_str()))
    );
    let (status, _, page) = request("GET", &format!("{us_node}/console"), &[], "").await;
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 200, "the console reads from the replica");
    assert!(page.contains("Read only: region us is a standby: it serves reads; writes go to region eu"), "{page}");
    eventually("eu sees us as its standby", Duration::from_secs(10), || async {
        let (_, _, region) = get_json(&format!("{eu_a}/v1/region")).await;
        let seen = (region["standing"].as_str(), region["peers"][0]["standing"].as_str());
        (seen == (Some("active"), Some("standby"))).then_some(())
    })
    .await;

    // A keyed admission in eu, then load on both eu nodes, killed midway.
    let keyed = [("idempotency-key", "order-1"), ("content-type", "application/json")];
    let invocations = |base: &str| format!("{base}/v1/functions/count/invocations");
    let (status, _, first) = request("POST", &invocations(&eu_a), &keyed, "{}").await;
    assert_eq!(status, 202);
    let keyed_id = serde_json::from_slice::<Value>(&first).unwrap()["id"].as_str().unwrap().to_owned();
    let load: Vec<_> = [eu_a.clone(), eu_b.clone()]
        .into_iter()
        .map(|base| tokio::spawn(async move { submit_many(&base, "count", 60).await }))
        .collect();
    eventually("20 increments in eu before the kill", Duration::from_secs(60), || async {
        (counter.calls_from("eu") >= 20).then_some(())
    })
    .await;
    eu.kill_all();
    eu_pg.kill().unwrap();
    let mut acknowledged = vec![keyed_id.clone()];
    for submitted in load {
        acknowledged.extend(submitted.await.unwrap());
    }
    assert!(acknowledged.len() > 20, "{} acknowledged", acknowledged.len());

    // Failover: promote us; it admits and completes work without a restart.
    let promoted_at = Instant::now();
    let promote = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["region", "promote", "-c", us.config.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&promote.stdout);
    assert!(promote.status.success(), "{said}{}", String::from_utf8_lossy(&promote.stderr));
    assert_eq!(said.trim(), "region us is primary at epoch 2");
    *counter.keel.lock().unwrap() = us_node.clone();
    eventually("a sync call completed in us after the promotion", Duration::from_secs(30), || async {
        let (status, _, _) = request("POST", &format!("{us_node}/v1/functions/count/invoke"), &[], "{}").await;
        (status == 200).then_some(())
    })
    .await;
    eprintln!("RTO (promotion to first completed invocation): {} ms", promoted_at.elapsed().as_millis());
    let (_, _, region) = get_json(&format!("{us_node}/v1/region")).await;
    assert_eq!((region["standing"].as_str(), region["epoch"].as_u64()), (Some("active"), Some(2)), "{region}");

    // Every acknowledged invocation completes in us; every increment applied once.
    wait_all_succeeded(&us_node, "count", &acknowledged, Duration::from_secs(120)).await;
    let succeeded = all_with_status(&us_node, "count", "succeeded").await;
    let (status, _, hits) = get_json(&format!("{us_node}/v1/kv/counters/hits")).await;
    assert_eq!(status, 200);
    assert_eq!(hits.as_u64(), Some(succeeded.len() as u64), "the counter counts each completed increment once");
    eprintln!("RPO with synchronous replication: 0 of {} acknowledged lost", acknowledged.len());

    // The key admitted in eu replays in us.
    let (status, headers, again) = request("POST", &invocations(&us_node), &keyed, "{}").await;
    assert_eq!(status, 202);
    assert_eq!(serde_json::from_slice::<Value>(&again).unwrap()["id"], keyed_id.as_str());
    assert!(headers.contains_key("idempotent-replayed"));

    // The old primary comes back (its database without the standby it waited on) and is fenced.
    eu_pg.resume().unwrap();
    eu_pg.execute("postgres", "ALTER SYSTEM RESET synchronous_standby_names").await.unwrap();
    eu_pg.execute("postgres", "SELECT pg_reload_conf()").await.unwrap();
    let eu_calls = counter.calls_from("eu");
    let port = free_port();
    let old = format!("http://127.0.0.1:{port}");
    let log = eu.dir.path().join("old.log");
    eu.nodes.push((old.clone(), spawn_keel(&eu.config, port, &log)));
    let region = eventually("the old primary's node answers", Duration::from_secs(20), || async {
        let read = hyper::Request::get(format!("{old}/v1/region")).body(Default::default()).unwrap();
        let (status, _, body) = send(read).await.ok()?;
        (status == 200).then(|| serde_json::from_slice::<Value>(&body).unwrap())
    })
    .await;
    assert_eq!((region["standing"].as_str(), region["epoch"].as_u64()), (Some("fenced"), Some(1)), "{region}");
    let (status, _, refused) = request("POST", &invocations(&old), &[], "{}").await;
    let refused: Value = serde_json::from_slice(&refused).unwrap();
    assert_eq!((status, refused["type"].as_str()), (503, Some("urn:keel:problem:fenced")), "{refused}");
    assert_eq!(refused["primary_region"], "us");
    assert_eq!(get_json(&format!("{old}/readyz")).await.0, 503);
    // Its database names us now, so a restart stays fenced without asking the peers.
    eventually("the fence written into eu's database", Duration::from_secs(20), || async {
        let row = eu_pg.first_row(&db_name, "SELECT epoch, primary_region FROM region_epoch").await.ok()??;
        (row == [Some("2".to_owned()), Some("us".to_owned())]).then_some(())
    })
    .await;
    let unfinished = "SELECT count(*) FROM invocations WHERE status IN ('queued', 'retrying', 'running')";
    let row = eu_pg.first_row(&db_name, unfinished).await.unwrap().unwrap();
    let unfinished: u64 = row[0].as_deref().unwrap().parse().unwrap();
    assert!(unfinished > 0, "eu's database still holds work a live node would run");
    // The time a live primary would take to lease and call (it would within a second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(counter.calls_from("eu"), eu_calls, "the fenced node dispatched nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_asynchronous_replication_a_standby_promotes_itself_and_reports_what_it_lost() {
    let Some(Clusters { eu_pg, us_pg, database, db_name }) = primary_and_replica().await else { return };
    let counter = Counter::default();
    let function = serve_counter(&counter).await;
    let (eu_port, us_port) = (free_port(), free_port());
    let (eu_url, us_url) = (format!("http://127.0.0.1:{eu_port}"), format!("http://127.0.0.1:{us_port}"));
    let mut eu = Region::configure(&database, "eu", "primary", ("us", &us_url), &function);
    let failover = "failover_after = \"2s\"\n";
    let mut us = Region::configure_with(&us_pg.url(&db_name), "us", "standby", ("eu", &eu_url), &function, failover);
    let eu_node = eu.start(eu_port).await;
    *counter.keel.lock().unwrap() = eu_node.clone();
    let us_node = us.start(us_port).await;
    // While eu answers as the active primary, us does not promote itself.
    eventually("us sees eu active", Duration::from_secs(10), || async {
        let (_, _, region) = get_json(&format!("{us_node}/v1/region")).await;
        (region["peers"][0]["standing"] == "active").then_some(())
    })
    .await;

    let load = {
        let eu_node = eu_node.clone();
        tokio::spawn(async move { submit_many(&eu_node, "count", 80).await })
    };
    eventually("10 increments in eu before the kill", Duration::from_secs(60), || async {
        (counter.calls_from("eu") >= 10).then_some(())
    })
    .await;
    eu.kill_all();
    eu_pg.kill().unwrap();
    let killed_at = Instant::now();
    let acknowledged = load.await.unwrap();
    *counter.keel.lock().unwrap() = us_node.clone();

    // No one promotes us: it does, once eu has been silent for failover_after.
    eventually("us promoted itself", Duration::from_secs(30), || async {
        let (_, _, region) = get_json(&format!("{us_node}/v1/region")).await;
        (region["standing"] == "active" && region["epoch"] == 2).then_some(())
    })
    .await;
    let rto = killed_at.elapsed();
    assert!(rto >= Duration::from_secs(2), "not before failover_after: {rto:?}");
    eventually("a sync call completed in us", Duration::from_secs(30), || async {
        let (status, _, _) = request("POST", &format!("{us_node}/v1/functions/count/invoke"), &[], "{}").await;
        (status == 200).then_some(())
    })
    .await;
    eprintln!(
        "RTO with failover_after = 2s (primary killed to first completed invocation): {} ms",
        killed_at.elapsed().as_millis()
    );

    // What reached us completes, each increment once; what did not is counted, not hidden.
    let mut reached = Vec::new();
    for id in &acknowledged {
        match get_json(&format!("{us_node}/v1/invocations/{id}")).await.0 {
            200 => reached.push(id.clone()),
            status => assert_eq!(status, 404, "an acknowledged invocation is in us or not at all"),
        }
    }
    wait_all_succeeded(&us_node, "count", &reached, Duration::from_secs(120)).await;
    let succeeded = all_with_status(&us_node, "count", "succeeded").await;
    let (_, _, hits) = get_json(&format!("{us_node}/v1/kv/counters/hits")).await;
    assert_eq!(hits.as_u64(), Some(succeeded.len() as u64), "each increment that reached us applied once");
    eprintln!(
        "RPO with asynchronous replication: {} of {} acknowledged invocations lost",
        acknowledged.len() - reached.len(),
        acknowledged.len()
    );
    let log = std::fs::read_to_string(us.dir.path().join(format!("node-{us_port}.log"))).unwrap();
    assert!(log.contains("region: promoted"), "the promotion is logged: {log}");
    assert!(log.contains("the last transaction replayed from the old primary committed there at"), "{log}");
}
