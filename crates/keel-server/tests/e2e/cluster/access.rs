//! Keys across a cluster: a key made through one node works on the other, and a revocation
//! through one node is refused by the other within a second or two (each node reads the keys
//! again every second).

use std::time::{Duration, Instant};

use keel_store::pg_testkit::fresh_database;
use serde_json::Value;

use super::Cluster;
use crate::support::request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_or_revoked_on_one_node_is_seen_by_the_other() {
    let Some(database) = fresh_database().await else { return };
    // The first admin key goes straight into the database, as `keel keys create -c` does.
    let store = keel_store::open(&keel_store::StoreOptions { url: database.clone(), fsync: true }).unwrap();
    let secret = format!("keel_sk_{}", "A".repeat(43));
    store.create_api_key(crate::access::key_of(&secret, "admin", &["admin"])).await.unwrap();
    store.close().await.unwrap();
    let cluster = Cluster::start(&database, "[auth]\nmode = \"keys\"\n", 2).await;
    let admin_auth = format!("Bearer {secret}");

    let (status, _, body) = request(
        "POST",
        &format!("{}/v1/keys", cluster.url(0)),
        &[("authorization", &admin_auth), ("content-type", "application/json")],
        r#"{"name":"reader","scopes":["read"]}"#,
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let created: Value = serde_json::from_slice(&body).unwrap();
    let reader = format!("Bearer {}", created["secret"].as_str().unwrap());
    let id = created["id"].as_str().unwrap();

    let on_other = format!("{}/v1/functions", cluster.url(1));
    let until = |want: u16| {
        let (url, auth) = (on_other.clone(), reader.clone());
        async move {
            let started = Instant::now();
            loop {
                let status = request("GET", &url, &[("authorization", &auth)], "").await.0;
                if status == want {
                    return started.elapsed();
                }
                assert!(started.elapsed() < Duration::from_secs(5), "node 1 still answers {status}, not {want}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };
    until(200).await;
    let (status, _, _) =
        request("DELETE", &format!("{}/v1/keys/{id}", cluster.url(0)), &[("authorization", &admin_auth)], "").await;
    assert_eq!(status, 200);
    // Refused at once where it was revoked, and within about a second on the other node.
    assert_eq!(
        request("GET", &format!("{}/v1/functions", cluster.url(0)), &[("authorization", &reader)], "").await.0,
        401
    );
    let took = until(401).await;
    assert!(took < Duration::from_millis(2500), "the revocation took {took:?} to reach node 1");
}
