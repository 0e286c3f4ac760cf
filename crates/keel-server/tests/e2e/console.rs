//! The web console in a real headless browser (chromium through chromedriver, driven by
//! fantoccini): the overview's figures, a redrive from the DLQ with its confirmation, the
//! invocation filters, a sign-in whose key lacks a scope; and a crawler (plain HTTP) that follows
//! every link from `/console` and fails on a broken one. Screenshots go to
//! `target/console-screenshots/`.
//!
//! Without `chromedriver` on PATH the browser tests print a loud skip line and pass, unless `CI`
//! is set: then they fail (`.ci/console-deps` installs chromium and chromium-driver).

use std::collections::{BTreeSet, VecDeque};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;

use crate::access::{key, start_secured};
use crate::support::{eventually, fast_retry, free_port, get_json, post_json, request, Functions, Keel};

/// chromedriver on a port of its own, and a browser session on it.
struct Browser {
    client: Client,
    _driver: Driver,
}

/// chromedriver in a process group of its own, which the chromium it starts joins: the whole
/// group is killed when this drops (a test that fails midway included), so no browser outlives
/// its test.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("chromedriver")).find(|p| p.is_file())
}

/// A headless chromium at 1280×900, or `None` (after a loud line) when chromedriver is missing
/// outside CI.
async fn browser(test: &str) -> Option<Browser> {
    let Some(binary) = chromedriver() else {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: chromedriver is not on PATH; run .ci/console-deps (Debian's chromium and chromium-driver)");
        }
        // Straight to stderr, not through `eprintln!`, which the test harness captures.
        let line = format!(
            "\n!!!!! SKIPPED {test}: no chromedriver on PATH (apt-get install chromium chromium-driver, or .ci/console-deps) !!!!!\n"
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return None;
    };
    let port = free_port();
    let driver = Driver(
        Command::new(binary)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver"),
    );
    let url = format!("http://127.0.0.1:{port}");
    eventually("chromedriver answers", Duration::from_secs(20), || {
        let status = format!("{url}/status");
        async move {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            matches!(tokio::time::timeout(Duration::from_secs(1), get_json(&status)).await, Ok((200, _, _)))
                .then_some(())
        }
    })
    .await;
    let mut capabilities = serde_json::Map::new();
    let args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"];
    capabilities.insert("goog:chromeOptions".into(), serde_json::json!({ "args": args }));
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&url)
        .await
        .expect("a chromium session");
    Some(Browser { client, _driver: driver })
}

/// `target/console-screenshots/NAME.png`.
async fn screenshot(client: &Client, name: &str) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text_of(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
}

/// Waits for the page to hold `css` (after a navigation or a form's answer).
async fn wait_for(client: &Client, css: &str) {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"));
}

/// One async invocation of `function` that ends dead (its URL is down), waited for.
async fn dead_invocation(keel: &Keel, function: &str) -> String {
    let (status, _, body) = post_json(&format!("{}/v1/functions/{function}/invocations", keel.url), "{\"n\":1}").await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let inv = keel.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(inv["status"], "dead", "{inv}");
    id
}

#[tokio::test]
async fn console_overview_shows_a_functions_figures_and_pauses_one() {
    let Some(browser) = browser("console_overview_shows_a_functions_figures_and_pauses_one").await else { return };
    let (_functions, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.echo]\nurl = \"http://{addr}/ok\"\n[functions.failing]\nurl = \"http://{addr}/status?code=500\"\n{}\n",
        fast_retry(1)
    ))
    .await;
    for _ in 0..6 {
        let (status, _, _) = request("POST", &format!("{}/v1/functions/echo/invoke", keel.url), &[], "{}").await;
        assert_eq!(status, 200);
    }
    let c = &browser.client;
    c.goto(&format!("{}/console", keel.url)).await.unwrap();
    wait_for(c, r#"tr[data-function="echo"]"#).await;
    // Queued and DLQ sizes show "…" while the backlog is being counted; the page refreshes them.
    eventually("the backlog is counted", Duration::from_secs(10), || async {
        let dlq = text_of(c, r#"tr[data-function="echo"] td[data-figure="dlq"]"#).await;
        (dlq != "…").then_some(())
    })
    .await;
    let rate = text_of(c, r#"tr[data-function="echo"] td[data-figure="rate"]"#).await;
    assert_eq!(rate, "0.02/s", "6 attempts over 5 minutes");
    assert_eq!(text_of(c, r#"tr[data-function="echo"] td[data-figure="errors"]"#).await, "0.0%");
    assert!(text_of(c, r#"tr[data-function="echo"] td[data-figure="p99"]"#).await.starts_with('≤'));
    assert_eq!(text_of(c, r#"tr[data-function="echo"] td[data-figure="dlq"]"#).await, "0");
    assert_eq!(text_of(c, r#"tr[data-function="failing"] td[data-figure="rate"]"#).await, "0.00/s");
    let chart = c.find(Locator::Css("svg.chart[aria-label^='echo: 6 attempts']")).await;
    assert!(chart.is_ok(), "the chart of echo names its 6 attempts");
    screenshot(c, "overview").await;
    c.set_window_size(390, 844).await.unwrap();
    screenshot(c, "overview-phone").await;
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("{}/console/functions", keel.url)).await.unwrap();
    wait_for(c, "#fn-echo").await;
    screenshot(c, "functions").await;
    // Pause and resume, as the API would: stored, and shown.
    c.find(Locator::XPath("//button[normalize-space()='Pause echo']")).await.unwrap().click().await.unwrap();
    wait_for(c, "#fn-echo .badge.warn").await;
    let (_, _, echo) = get_json(&format!("{}/v1/functions/echo", keel.url)).await;
    assert_eq!(echo["paused"], true, "{echo}");
    c.find(Locator::XPath("//button[normalize-space()='Resume echo']")).await.unwrap().click().await.unwrap();
    wait_for(c, "#fn-echo button.danger").await;
    let (_, _, echo) = get_json(&format!("{}/v1/functions/echo", keel.url)).await;
    assert_eq!(echo["paused"], false, "{echo}");
}

#[tokio::test]
async fn console_redrives_a_dead_invocation_from_the_dlq() {
    let Some(browser) = browser("console_redrives_a_dead_invocation_from_the_dlq").await else { return };
    let (functions, addr) = Functions::start().await;
    let keel = Keel::start(&format!("[functions.switch]\nurl = \"http://{addr}/switch\"\n{}", fast_retry(2))).await;
    functions.set_down(true);
    let id = dead_invocation(&keel, "switch").await;
    functions.set_down(false);

    let c = &browser.client;
    c.goto(&format!("{}/console/dlq", keel.url)).await.unwrap();
    wait_for(c, &format!("a[href='/console/invocations/{id}']")).await;
    screenshot(c, "dlq").await;
    c.find(Locator::Css(&format!("a[href='/console/invocations/{id}']"))).await.unwrap().click().await.unwrap();
    wait_for(c, "ol.timeline").await;
    assert_eq!(c.find_all(Locator::Css("ol.timeline li")).await.unwrap().len(), 2, "two attempts on the timeline");
    screenshot(c, "invocation-dead").await;
    c.find(Locator::XPath("//button[normalize-space()='Redrive']")).await.unwrap().click().await.unwrap();
    // The confirmation, then the invocation again, requeued.
    wait_for(c, "button#confirm").await;
    assert!(text_of(c, "main").await.contains(&id));
    c.find(Locator::Css("button#confirm")).await.unwrap().click().await.unwrap();
    wait_for(c, "p.note").await;
    assert_eq!(text_of(c, "p.note").await, "Redriven.");
    let done = keel.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["redrives"], 1);
    c.refresh().await.unwrap();
    wait_for(c, "span.badge.ok").await;
    screenshot(c, "invocation-redriven").await;
}

#[tokio::test]
async fn console_filters_invocations_by_function_and_status() {
    let Some(browser) = browser("console_filters_invocations_by_function_and_status").await else { return };
    let (_functions, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.alpha]\nurl = \"http://{addr}/ok\"\n[functions.beta]\nurl = \"http://{addr}/ok\"\n"
    ))
    .await;
    for function in ["alpha", "alpha", "beta", "beta", "beta"] {
        let (status, _, _) = request("POST", &format!("{}/v1/functions/{function}/invoke", keel.url), &[], "{}").await;
        assert_eq!(status, 200);
    }
    let c = &browser.client;
    c.goto(&format!("{}/console/invocations", keel.url)).await.unwrap();
    wait_for(c, "table tbody tr").await;
    assert_eq!(c.find_all(Locator::Css("table tbody tr")).await.unwrap().len(), 5);
    let form = c.form(Locator::Css("form.filters")).await.unwrap();
    c.find(Locator::Css("select[name=function]")).await.unwrap().select_by_value("alpha").await.unwrap();
    c.find(Locator::Css("select[name=status]")).await.unwrap().select_by_value("succeeded").await.unwrap();
    form.submit().await.unwrap();
    wait_for(c, "select[name=function] option[value=alpha][selected]").await;
    let rows = c.find_all(Locator::Css("table tbody tr td:nth-child(2)")).await.unwrap();
    assert_eq!(rows.len(), 2, "alpha's two invocations");
    for row in rows {
        assert_eq!(row.text().await.unwrap(), "alpha");
    }
    assert!(c.current_url().await.unwrap().as_str().contains("function=alpha"));
    screenshot(c, "invocations-filtered").await;
    // A filter that matches nothing says so, and what to do.
    c.goto(&format!("{}/console/invocations?function=beta&status=dead", keel.url)).await.unwrap();
    wait_for(c, "div.empty").await;
    assert!(text_of(c, "div.empty").await.contains("No invocations match"));
}

#[tokio::test]
async fn console_sign_in_with_a_read_key_sees_but_may_not_redrive() {
    let Some(browser) = browser("console_sign_in_with_a_read_key_sees_but_may_not_redrive").await else { return };
    let (functions, addr) = Functions::start().await;
    let (reader, reader_secret) = key("console-reader", &["read"], None, None);
    let (admin, admin_secret) = key("admin", &["admin"], None, None);
    let keel = start_secured(
        &format!("[functions.switch]\nurl = \"http://{addr}/switch\"\n{}", fast_retry(1)),
        &[&reader, &admin],
    )
    .await;
    functions.set_down(true);
    let auth = format!("Bearer {admin_secret}");
    let (status, _, body) =
        request("POST", &format!("{}/v1/functions/switch/invocations", keel.url), &[("authorization", &auth)], "{}")
            .await;
    assert_eq!(status, 202);
    let id = serde_json::from_slice::<Value>(&body).unwrap()["id"].as_str().unwrap().to_owned();
    eventually("the invocation is dead", Duration::from_secs(20), || {
        let url = format!("{}/v1/invocations/{id}", keel.url);
        let auth = auth.clone();
        async move {
            let (_, _, body) = request("GET", &url, &[("authorization", &auth)], "").await;
            (serde_json::from_slice::<Value>(&body).ok()?["status"] == "dead").then_some(())
        }
    })
    .await;

    let c = &browser.client;
    // Not signed in: the console sends the browser to sign in, and back after.
    c.goto(&format!("{}/console/dlq", keel.url)).await.unwrap();
    wait_for(c, "input#key").await;
    assert!(c.current_url().await.unwrap().as_str().contains("/console/sign-in"));
    c.find(Locator::Css("input#key")).await.unwrap().send_keys("keel_sk_wrong").await.unwrap();
    c.find(Locator::Css("form.card button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_for(c, "p.error").await;
    assert!(text_of(c, "p.error").await.contains("unknown API key"));
    screenshot(c, "sign-in").await;
    c.find(Locator::Css("input#key")).await.unwrap().send_keys(&reader_secret).await.unwrap();
    c.find(Locator::Css("form.card button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_for(c, &format!("a[href='/console/invocations/{id}']")).await;
    assert!(c.current_url().await.unwrap().as_str().ends_with("/console/dlq"));
    assert!(text_of(c, "div.who").await.contains("console-reader"));
    // The key reads, but a redrive needs `dlq`: refused, and told why.
    c.find(Locator::XPath("//button[starts-with(normalize-space(), 'Redrive every')]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(c, "div.refusal").await;
    assert_eq!(text_of(c, "div.refusal code.scope").await, "dlq");
    screenshot(c, "refused").await;
    let (_, _, body) =
        request("GET", &format!("{}/v1/invocations/{id}", keel.url), &[("authorization", &auth)], "").await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["status"], "dead", "not redriven");
}

#[tokio::test]
async fn console_every_other_page_renders_in_the_browser() {
    let Some(browser) = browser("console_every_other_page_renders_in_the_browser").await else { return };
    let (functions, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[chaos]\nenabled = true\n[functions.echo]\nurl = \"http://{addr}/ok\"\ndependencies = [\"payments\"]\n\
         [functions.switch]\nurl = \"http://{addr}/switch\"\n{}\n[dependencies.payments]\nurl = \"http://{addr}\"\n\
         [topics.orders]\n[[subscriptions]]\nname = \"orders-to-echo\"\ntopic = \"orders\"\nfunction = \"echo\"\n\
         [workflows.checkout]\nsteps = [{{ name = \"reserve\", function = \"echo\" }}, {{ name = \"ship\", function = \"echo\" }}]\n\
         [schedules.nightly]\ncron = \"0 3 * * *\"\nfunction = \"echo\"\n",
        fast_retry(1)
    ))
    .await;
    functions.set_down(true);
    dead_invocation(&keel, "switch").await;
    let (_, _, published) = post_json(&format!("{}/v1/topics/orders/events", keel.url), "{\"order\":7}").await;
    let event = published["ids"][0].as_str().unwrap().to_owned();
    let (status, _, run) = post_json(&format!("{}/v1/workflows/checkout/runs", keel.url), "{\"item\":1}").await;
    assert_eq!(status, 202, "{run}");
    let run = run["id"].as_str().unwrap().to_owned();
    let fault = r#"{"target": {"function": "switch"}, "kind": "error", "duration": "60s"}"#;
    let (status, _, body) = post_json(&format!("{}/v1/chaos/faults", keel.url), fault).await;
    assert_eq!(status, 201, "{body}");

    let c = &browser.client;
    let pages = [
        (format!("/console/events/{event}"), "Event", "event"),
        ("/console/workflows".to_owned(), "Workflows", "workflows"),
        (format!("/console/workflow-runs/{run}"), "Workflow run", "workflow-run"),
        ("/console/schedules".to_owned(), "Schedules", "schedules"),
        ("/console/dependencies".to_owned(), "Dependencies", "dependencies"),
        ("/console/kv".to_owned(), "KV", "kv"),
        ("/console/chaos".to_owned(), "Chaos faults", "chaos"),
    ];
    for (path, title, shot) in &pages {
        c.goto(&format!("{}{path}", keel.url)).await.unwrap();
        wait_for(c, "main h1").await;
        assert_eq!(&text_of(c, "main h1").await, title, "{path}");
        screenshot(c, shot).await;
    }
    assert!(text_of(c, "main table").await.contains("switch"), "the fault on switch is listed");
    // Clearing the fault: the API's own clear; the page then says none is in force.
    c.find(Locator::Css("button[aria-label^='Clear fault']")).await.unwrap().click().await.unwrap();
    wait_for(c, "div.empty").await;
    assert!(text_of(c, "div.empty").await.contains("No faults are in force"));
    c.goto(&format!("{}/console/events/{event}", keel.url)).await.unwrap();
    wait_for(c, "main table").await;
    assert!(text_of(c, "main table").await.contains("orders-to-echo"), "the delivery of the event");

    // KV: a namespace named on the lookup page lists its keys, a prefix narrows them, a key
    // links to its value.
    for (key, value) in [("u/1", r#"{"items":1}"#), ("u/2", r#"{"items":2}"#), ("v/1", "7")] {
        let url = format!("{}/v1/kv/carts/{}", keel.url, keel_server::client::encode(key));
        assert_eq!(request("PUT", &url, &[], value).await.0, 201, "{key}");
    }
    c.goto(&format!("{}/console/kv", keel.url)).await.unwrap();
    wait_for(c, "input[name=ns]").await;
    c.find(Locator::Css("input[name=ns]")).await.unwrap().send_keys("carts").await.unwrap();
    c.form(Locator::Css("form.filters")).await.unwrap().submit().await.unwrap();
    wait_for(c, "table tbody tr[data-key]").await;
    assert!(c.current_url().await.unwrap().as_str().ends_with("/console/kv/carts"));
    assert_eq!(text_of(c, "main h1").await, "KV: carts");
    let keys = |c: &Client| {
        let c = c.clone();
        async move {
            let mut keys = Vec::new();
            for cell in c.find_all(Locator::Css("table tbody tr td:first-child")).await.unwrap() {
                keys.push(cell.text().await.unwrap());
            }
            keys
        }
    };
    assert_eq!(keys(c).await, ["u/1", "u/2", "v/1"]);
    assert_eq!(text_of(c, "tr[data-key='u/2'] td:nth-child(2)").await, "1", "the version");
    screenshot(c, "kv-namespace").await;
    c.find(Locator::Css("input[name=prefix]")).await.unwrap().send_keys("u/").await.unwrap();
    c.form(Locator::Css("form.filters")).await.unwrap().submit().await.unwrap();
    wait_for(c, "input[name=prefix][value='u/']").await;
    assert_eq!(keys(c).await, ["u/1", "u/2"]);
    c.find(Locator::Css("tr[data-key='u/2'] a")).await.unwrap().click().await.unwrap();
    wait_for(c, "pre.json").await;
    assert_eq!(text_of(c, "main h1").await, "KV entry");
    assert!(text_of(c, "pre.json").await.contains("\"items\": 2"));
    c.goto(&format!("{}/console/kv/carts?prefix=nothing", keel.url)).await.unwrap();
    wait_for(c, "div.empty").await;
    assert!(text_of(c, "div.empty").await.contains("No key of carts starts with \"nothing\""));
}

/// Every `href` and `src` of an HTML page that stays on this site.
fn links(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["href=\"", "src=\""] {
        for piece in html.split(attribute).skip(1) {
            let link = piece.split('"').next().unwrap_or_default().replace("&amp;", "&");
            if link.starts_with('/') && !link.starts_with("//") {
                found.push(link);
            }
        }
    }
    found
}

#[tokio::test]
async fn console_crawl_finds_no_broken_link() {
    let (functions, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.switch]\nurl = \"http://{addr}/switch\"\n{}\n[functions.echo]\nurl = \"http://{addr}/ok\"\n\
         [topics.\"orders.created\"]\n[[subscriptions]]\nname = \"orders-to-echo\"\ntopic = \"orders.created\"\nfunction = \"echo\"\n\
         [workflows.checkout]\nsteps = [{{ name = \"reserve\", function = \"echo\" }}, {{ name = \"confirm\", function = \"echo\" }}]\n\
         [schedules.hourly]\nevery = \"1h\"\nfunction = \"echo\"\n",
        fast_retry(1)
    ))
    .await;
    let (status, _, run) = post_json(&format!("{}/v1/workflows/checkout/runs", keel.url), "{\"item\":1}").await;
    assert_eq!(status, 202, "{run}");
    let run = run["id"].as_str().unwrap().to_owned();
    functions.set_down(true);
    dead_invocation(&keel, "switch").await;
    let (status, _, published) =
        post_json(&format!("{}/v1/topics/orders.created/events", keel.url), "{\"order\":7}").await;
    assert_eq!(status, 202, "{published}");
    let event = published["ids"][0].as_str().unwrap().to_owned();
    // More than a page of invocations (50), so the list links its next page.
    for _ in 0..50 {
        let (status, _, _) = request("POST", &format!("{}/v1/functions/echo/invoke", keel.url), &[], "{}").await;
        assert_eq!(status, 200);
    }
    // More than a page of KV keys too, some with characters a link must escape. No page lists
    // namespaces, so the crawl starts at this one as well.
    for i in 0..52 {
        let key = if i % 2 == 0 { format!("user {i}/items?x=1&y=#%") } else { format!("k{i:02}") };
        let url = format!("{}/v1/kv/carts/{}", keel.url, keel_server::client::encode(&key));
        assert_eq!(request("PUT", &url, &[], "{}").await.0, 201, "{key}");
    }

    let mut seen = BTreeSet::from(["/console".to_owned(), "/console/kv/carts".to_owned()]);
    let mut queue = VecDeque::from(["/console".to_owned(), "/console/kv/carts".to_owned()]);
    let mut broken = Vec::new();
    while let Some(link) = queue.pop_front() {
        let (status, headers, body) = request("GET", &format!("{}{link}", keel.url), &[], Bytes::new()).await;
        if status != 200 {
            broken.push(format!("{link}: {status}"));
            continue;
        }
        let is_html = headers.get("content-type").is_some_and(|ct| ct.to_str().unwrap().starts_with("text/html"));
        if !is_html || !link.starts_with("/console") {
            continue;
        }
        for next in links(&String::from_utf8_lossy(&body)) {
            if seen.len() < 400 && seen.insert(next.clone()) {
                queue.push_back(next);
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:?}");
    for page in ["/console/functions", "/console/dlq", "/console/schedules", "/console/chaos", "/console/kv"] {
        assert!(seen.contains(page), "{page} is reachable from /console");
    }
    assert!(seen.contains(&format!("/console/events/{event}")), "the delivery links its event: {seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("/console/invocations/")), "invocations are linked");
    assert!(seen.contains(&format!("/console/workflow-runs/{run}")), "the workflow page links its run");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("/console/invocations?") && !l.ends_with("cursor=") && l.contains("&cursor=")),
        "a next page"
    );
    let entries = seen.iter().filter(|l| l.starts_with("/console/kv/carts/")).count();
    assert_eq!(entries, 52, "every key of both pages links its value: {seen:?}");
    assert!(seen.contains("/console/kv/carts/user%2010%2Fitems%3Fx%3D1%26y%3D%23%25"), "escaped: {seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("/console/kv/carts?prefix=&cursor=")), "a next page of keys");

    // A form of the schedules page, as a browser sends it: the CSRF token of its cookie.
    let headers = [("cookie", "keel_csrf=t"), ("content-type", "application/x-www-form-urlencoded")];
    let (status, answer, _) =
        request("POST", &format!("{}/console/schedules/hourly/pause", keel.url), &headers, "csrf=t").await;
    assert_eq!((status, answer["location"].to_str().unwrap()), (303, "/console/schedules"));
    let (_, _, schedule) = get_json(&format!("{}/v1/schedules/hourly", keel.url)).await;
    assert_eq!(schedule["paused"], true, "{schedule}");
}
