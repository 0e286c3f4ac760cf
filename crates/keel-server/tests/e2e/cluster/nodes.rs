//! `keel.node.joined|lost` in a cluster: each node says it joined, and a SIGKILLed node is
//! reported lost once, although every surviving node sees it and publishes it.

use std::time::Duration;

use keel_store::pg_testkit::fresh_database;

use super::Cluster;
use crate::support::{eventually, get_json, parse_metrics, request, Functions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_is_reported_lost_once_by_the_survivors() {
    let Some(database) = fresh_database().await else { return };
    let (fns, addr) = Functions::start().await;
    let functions = format!(
        "[functions.notify-ops]\nurl = \"http://{addr}/ok\"\n\n\
         [[subscriptions]]\nname = \"ops\"\ntopic = \"keel.system\"\nfunction = \"notify-ops\"\n"
    );
    let mut cluster = Cluster::start(&database, &functions, 3).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, _, view) = get_json(&format!("{}/v1/cluster", cluster.url(i))).await;
        ids.push(view["node"].as_str().unwrap().to_string());
    }
    let received = |ty: &str| {
        let mut subjects: Vec<String> = fns
            .calls()
            .iter()
            .filter(|c| c.headers.get("ce-type").is_some_and(|t| t == ty))
            .map(|c| c.headers["ce-subject"].to_str().unwrap().to_string())
            .collect();
        subjects.sort();
        subjects.dedup();
        subjects
    };
    let mut all = ids.clone();
    all.sort();
    eventually("each node's keel.node.joined", Duration::from_secs(20), || async {
        (received("keel.node.joined") == all).then_some(())
    })
    .await;
    let victim = &mut cluster.nodes[1].1;
    victim.kill().unwrap();
    victim.wait().unwrap();
    // Both survivors publish it (each counts it) ...
    for i in [0, 2] {
        let url = format!("{}/metrics", cluster.url(i));
        eventually("a survivor publishes keel.node.lost", Duration::from_secs(40), || async {
            let (_, _, text) = request("GET", &url, &[], "").await;
            let metrics = parse_metrics(std::str::from_utf8(&text).unwrap());
            (metrics.get(r#"keel_system_events_total{kind="keel.node.lost"}"#) == Some(&1.0)).then_some(())
        })
        .await;
    }
    // ... and the subscriber gets it once, once every delivery is over.
    let list = format!("{}/v1/invocations?function=notify-ops&limit=1000", cluster.url(0));
    eventually("every delivery is over", Duration::from_secs(20), || async {
        let (_, _, page) = get_json(&list).await;
        page["items"].as_array()?.iter().all(|i| i["status"] == "succeeded").then_some(())
    })
    .await;
    let lost: Vec<_> = fns.calls().into_iter().filter(|c| c.headers["ce-type"] == "keel.node.lost").collect();
    assert_eq!(lost.len(), 1, "one event for one lost node, whoever saw it");
    assert_eq!(lost[0].headers["ce-subject"], ids[1].as_str());
    assert_eq!(lost[0].headers["ce-source"], "keel://cluster");
}
