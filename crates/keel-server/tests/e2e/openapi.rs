//! `GET /v1/openapi.json`: an OpenAPI 3.1 document that describes every route of the router
//! (a route added without documentation fails here) and answers every error with the problem
//! schema; each operation has its own id and a declared tag, for generated clients; the same
//! document as YAML; and the copies in `docs/` are current.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

use crate::support::{get_json, request, Keel};

const PROBLEM: &str = "#/components/schemas/ProblemDetails";

/// A route as OpenAPI writes it: `{*key}` (axum's rest of the path) is `{key}`.
fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

/// Every `$ref` anywhere in `value`.
fn refs<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r);
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// What `pointer` (`#/components/...`) points at in `doc`.
fn resolve<'d>(doc: &'d Value, reference: &str) -> Option<&'d Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

#[tokio::test]
async fn openapi_document_describes_every_route_with_problems_for_errors() {
    let keel = Keel::start("[functions.echo]\nurl = \"http://127.0.0.1:9/ok\"\n").await;
    let (status, headers, doc) = get_json(&format!("{}/v1/openapi.json", keel.url)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "not OpenAPI 3.1: {}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");

    // Every route of the router is documented with its method, and nothing else is.
    let routes: BTreeSet<(String, String)> = keel_server::routes()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_ascii_lowercase(), openapi_path(path)))
        .collect();
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("path item").keys();
            methods
                .filter(|m| ["get", "put", "post", "delete", "patch", "options"].contains(&m.as_str()))
                .map(|m| (m.clone(), path.clone()))
        })
        .collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes missing from the OpenAPI document: {undocumented:?}");
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(unrouted.is_empty(), "documented operations the router does not have: {unrouted:?}");
    assert!(routes.len() >= 22, "the router lists {} routes", routes.len());

    // Every operation names the scope its route needs (from the route table), with its 401 and
    // 403; health and readiness need none.
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (method, path, scope) in keel_server::route_scopes() {
        let operation = &paths[&openapi_path(path)][method.as_str().to_ascii_lowercase()];
        match scope {
            Some(scope) => {
                assert_eq!(operation["security"], serde_json::json!([{ "bearer": [scope] }]), "{method} {path}");
                for status in ["401", "403"] {
                    assert!(operation["responses"][status].is_object(), "{method} {path}: no {status}");
                }
            }
            None => assert_eq!(operation["security"], serde_json::json!([{}]), "{method} {path}"),
        }
    }

    // Every error status of every operation answers the problem schema as problem+json.
    let problem = resolve(&doc, PROBLEM).expect("the ProblemDetails schema");
    for member in ["type", "title", "status", "detail"] {
        assert!(problem["required"].as_array().unwrap().contains(&Value::from(member)), "{problem}");
    }
    for (method, path) in &documented {
        let operation = &paths[path][method];
        let responses = operation["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: no success response");
        for (status, response) in responses {
            if status.parse::<u16>().is_ok_and(|s| s >= 400) {
                let schema = &response["content"]["application/problem+json"]["schema"];
                assert_eq!(schema["$ref"], PROBLEM, "{method} {path} {status}: {response}");
            }
        }
    }

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for reference in all {
        assert!(resolve(&doc, reference).is_some(), "dangling reference {reference}");
    }

    // The headers and content types that matter are there.
    let params = |method: &str, path: &str| -> Vec<String> {
        let list = paths[path][method]["parameters"].as_array().cloned().unwrap_or_default();
        list.iter().map(|p| format!("{} {}", p["in"].as_str().unwrap(), p["name"].as_str().unwrap())).collect()
    };
    let invoke = params("post", "/v1/functions/{name}/invoke");
    for p in ["path name", "header Idempotency-Key", "header Prefer"] {
        assert!(invoke.contains(&p.to_string()), "sync invoke lacks {p}: {invoke:?}");
    }
    assert!(params("post", "/v1/functions/{name}/invocations").contains(&"header keel-delay".to_string()));
    assert!(params("put", "/v1/kv/{ns}/{key}").contains(&"header If-Match".to_string()));
    assert!(params("delete", "/v1/kv/{ns}/{key}").contains(&"header If-None-Match".to_string()));
    let sync_ok = &paths["/v1/functions/{name}/invoke"]["post"]["responses"]["2XX"]["headers"];
    for h in ["keel-invocation-id", "keel-attempts", "idempotent-replayed"] {
        assert!(sync_ok.get(h).is_some(), "sync invoke answers {h}: {sync_ok}");
    }
    let accepted = &paths["/v1/functions/{name}/invocations"]["post"]["responses"]["202"]["headers"];
    assert!(accepted.get("Location").is_some(), "{accepted}");
    assert!(paths["/v1/kv/{ns}/{key}"]["get"]["responses"]["200"]["headers"].get("ETag").is_some());
    assert!(paths["/readyz"]["get"]["responses"]["503"]["headers"].get("Retry-After").is_some());
    let publish = paths["/v1/topics/{topic}/events"]["post"]["requestBody"]["content"].as_object().unwrap();
    for ct in ["application/cloudevents+json", "application/cloudevents-batch+json", "application/json"] {
        assert!(publish.contains_key(ct), "publish takes {ct}: {:?}", publish.keys());
    }
}

/// The document states the rules the server applies (issue 12, item 12): the Idempotency-Key's
/// characters, keel-delay's form, KV names, list limits and cursors, and that If-Match and
/// If-None-Match cannot be combined. `.ci/openapi-conformance` checks them against the server.
#[tokio::test]
async fn the_document_states_the_servers_input_rules() {
    let keel = Keel::start("").await;
    let (_, _, doc) = get_json(&format!("{}/v1/openapi.json", keel.url)).await;
    let param = |path: &str, method: &str, name: &str| -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{method} {path}: no parameter {name}"))
    };
    let pattern = |p: &Value| p["schema"]["pattern"].as_str().unwrap_or_else(|| panic!("no pattern: {p}")).to_string();
    let key = param("/v1/functions/{name}/invocations", "post", "Idempotency-Key");
    assert!(pattern(&key).contains("{1,255}"), "{key}");
    let delay = param("/v1/functions/{name}/invocations", "post", "keel-delay");
    assert!(pattern(&delay).contains("8760)h"), "{delay}");
    for name in ["ns", "key"] {
        let p = param("/v1/kv/{ns}/{key}", "put", name);
        assert!(pattern(&p).contains("\\u0000-\\u001f"), "{p}");
        assert_eq!(p["schema"]["maxLength"], 255);
    }
    let if_match = param("/v1/kv/{ns}/{key}", "put", "If-Match");
    assert!(if_match["description"].as_str().unwrap().contains("Cannot be combined with If-None-Match"));
    assert!(pattern(&param("/v1/invocations", "get", "cursor")).starts_with("^[0-7]"));
    assert_eq!(param("/v1/dlq", "get", "limit")["schema"]["type"], "string");
}

/// What a client generator would trip on, one line each: an operation without an
/// `operationId`, one that is not camelCase, an id that two operations share (naming both), an
/// operation without a tag or with a tag the document does not declare.
fn operation_naming_faults(doc: &Value) -> Vec<String> {
    let declared: BTreeSet<&str> =
        doc["tags"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    let mut faults = Vec::new();
    let mut by_id: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if !["get", "put", "post", "delete", "patch", "options", "head", "trace"].contains(&method.as_str()) {
                continue;
            }
            let what = format!("{} {path}", method.to_ascii_uppercase());
            match operation["operationId"].as_str() {
                None => faults.push(format!("{what} has no operationId")),
                Some(id) => {
                    let camel = id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                        && id.chars().all(|c| c.is_ascii_alphanumeric());
                    if !camel {
                        faults.push(format!("{what}: operationId {id:?} is not camelCase"));
                    }
                    by_id.entry(id).or_default().push(what.clone());
                }
            }
            let tags: Vec<&str> =
                operation["tags"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if tags.is_empty() {
                faults.push(format!("{what} has no tag"));
            }
            for tag in tags.iter().filter(|t| !declared.contains(*t)) {
                faults.push(format!("{what}: tag {tag:?} is not declared in the document's tags"));
            }
        }
    }
    for (id, operations) in by_id.into_iter().filter(|(_, operations)| operations.len() > 1) {
        faults.push(format!("operationId {id:?} is shared by {}", operations.join(" and ")));
    }
    faults
}

#[tokio::test]
async fn every_operation_has_its_own_id_and_a_declared_tag() {
    let keel = Keel::start("").await;
    let (_, _, doc) = get_json(&format!("{}/v1/openapi.json", keel.url)).await;
    let faults = operation_naming_faults(&doc);
    assert!(faults.is_empty(), "operations a client generator cannot name:\n{}", faults.join("\n"));
    let id = |path: &str, method: &str| doc["paths"][path][method]["operationId"].clone();
    assert_eq!(id("/v1/functions/{name}/invoke", "post"), "invokeSync");
    assert_eq!(id("/v1/invocations/{id}", "get"), "getInvocation");
    assert_eq!(id("/v1/dlq", "get"), "listDlq");

    // The check itself: a copy with one id given twice and one taken away is refused, naming them.
    let mut broken = doc.clone();
    broken["paths"]["/v1/dlq"]["get"]["operationId"] = "getInvocation".into();
    broken["paths"]["/v1/functions"]["get"].as_object_mut().unwrap().remove("operationId");
    let faults = operation_naming_faults(&broken);
    assert!(
        faults.contains(&"operationId \"getInvocation\" is shared by GET /v1/dlq and GET /v1/invocations/{id}".into()),
        "{faults:?}"
    );
    assert!(faults.contains(&"GET /v1/functions has no operationId".into()), "{faults:?}");
}

/// Where the copies of the document live in the repository.
fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// `docs/openapi.json` (pretty-printed) and `docs/openapi.yaml` are the documents the server
/// serves, so a change to the API shows in review and tools can read the document without a
/// running server. `KEEL_WRITE_OPENAPI=1` writes them instead of comparing.
#[tokio::test]
async fn the_yaml_document_and_the_copies_in_docs_are_current() {
    let keel = Keel::start("").await;
    let (status, _, json) = get_json(&format!("{}/v1/openapi.json", keel.url)).await;
    assert_eq!(status, 200);
    let (status, headers, yaml) = request("GET", &format!("{}/v1/openapi.yaml", keel.url), &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/yaml");
    let yaml = String::from_utf8(yaml.to_vec()).expect("UTF-8 YAML");
    assert!(yaml.starts_with("components:\n"), "{}", &yaml[..yaml.len().min(200)]);
    assert!(yaml.contains("\n      operationId: invokeSync\n"), "the YAML lacks invokeSync");
    assert!(yaml.contains("\nopenapi: \"3.1.0\"\n"), "the YAML lacks its version");

    let copies = [("openapi.json", serde_json::to_string_pretty(&json).unwrap() + "\n"), ("openapi.yaml", yaml)];
    let write = std::env::var_os("KEEL_WRITE_OPENAPI").is_some_and(|v| v == "1");
    for (name, served) in copies {
        let path = docs_dir().join(name);
        if write {
            std::fs::write(&path, &served).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            continue;
        }
        let copy = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            copy == served,
            "docs/{name} is not the document the server serves; regenerate it with\n    \
             KEEL_WRITE_OPENAPI=1 cargo test -p keel-server --test e2e the_yaml_document_and_the_copies_in_docs_are_current\n\
             and commit it"
        );
    }
}
