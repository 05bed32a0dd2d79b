//! Monitoring (issue 16) against the real Prometheus (Debian `prometheus`, `make test-deps`):
//! the PrometheusRule of `infra/helm/monitoring` through `promtool check rules` and `promtool test
//! rules` (series that make every alert fire and stay silent), and a Prometheus on 127.0.0.1
//! scraping a running `wms-serve` under a short load, after which every dashboard query and every
//! recording rule must return data. Everything is started by the tests and stopped with them.

use std::collections::BTreeSet;
use std::io::{Cursor, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use image::{ImageFormat, Rgb, RgbImage};
use serde_json::Value;
use wms::data::preprocess::PreprocessSpec;
use wms::model::ModelSpec;

use crate::servers;
use crate::util::ServeProcess;

const MONITORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/helm/monitoring");

/// The namespace and pod the scrape config gives the wms-serve target, as the ServiceMonitor of
/// `infra/helm/wms-model` does in a cluster (namespace `<prefix><model>-<version>`).
const NAMESPACE: &str = "wms-meters-2-1";
const POD: &str = "meters-5d8f7c9b4-x2k7q";

/// The rule groups of the PrometheusRule (its `spec`) as a plain Prometheus rules file.
fn rules_file() -> String {
    let path = format!("{MONITORING}/prometheus-rule.yaml");
    let rule: serde_yaml::Value =
        serde_yaml::from_str(&fs_err::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"), "{path}");
    serde_yaml::to_string(&rule["spec"]).unwrap()
}

fn promtool(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian `prometheus`; `make test-deps` installs it)")
}

fn alert_names(rules: &str) -> BTreeSet<String> {
    let v: serde_yaml::Value = serde_yaml::from_str(rules).unwrap();
    v["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_every_alert_fires_and_stays_silent_in_its_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_file();
    fs_err::write(dir.path().join("wms.rules.yaml"), &rules).unwrap();
    let tests = fs_err::read_to_string(format!("{MONITORING}/tests/rules.test.yaml")).unwrap();
    fs_err::write(dir.path().join("rules.test.yaml"), &tests).unwrap();

    let out = promtool(&["check", "rules", "wms.rules.yaml"], dir.path());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check rules:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");

    let out = promtool(&["test", "rules", "rules.test.yaml"], dir.path());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool test rules:\n{text}");

    // Every alert has a case where it fires (a non-empty exp_alerts) and one where it does not.
    let alerts = alert_names(&rules);
    for a in [
        "HighInferenceLatency",
        "HighInferenceErrorRate",
        "PromotedVersionNoTraffic",
    ] {
        assert!(alerts.contains(a), "{a} missing from {alerts:?}");
    }
    let t: serde_yaml::Value = serde_yaml::from_str(&tests).unwrap();
    let cases: Vec<(String, bool)> = t["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| {
            g["alert_rule_test"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| {
            let fires = c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
            (c["alertname"].as_str().unwrap().to_string(), fires)
        })
        .collect();
    for a in &alerts {
        for fires in [true, false] {
            assert!(
                cases.contains(&(a.clone(), fires)),
                "no promtool case where {a} {}",
                if fires { "fires" } else { "stays silent" }
            );
        }
    }

    // And the test is not vacuous: a threshold moved past the test series fails it.
    let broken = rules.replace(
        "model_version:wms_inference_latency_seconds:p95_5m > 1",
        "model_version:wms_inference_latency_seconds:p95_5m > 5",
    );
    assert_ne!(broken, rules);
    fs_err::write(dir.path().join("wms.rules.yaml"), broken).unwrap();
    let out = promtool(&["test", "rules", "rules.test.yaml"], dir.path());
    assert!(!out.status.success(), "promtool passed with a broken rule");
}

/// A tiny model (base 4, 64×64 input) exported by the library, version 2.1.
fn small_model(dir: &Path) -> PathBuf {
    let spec = ModelSpec {
        base_filters: 4,
        ..ModelSpec::default()
    };
    let mut ckpt = wms::onnx::fixtures::random_checkpoint(spec, 16);
    ckpt.meta.model_name = "meters".into();
    ckpt.meta.preprocessing = PreprocessSpec {
        input_width: 64,
        input_height: 64,
        ..PreprocessSpec::default()
    };
    let path = dir.join("meters.onnx");
    let opts = wms::onnx::ExportOptions {
        version: "2.1".into(),
    };
    fs_err::write(&path, wms::onnx::export(&ckpt, &opts).unwrap()).unwrap();
    path
}

fn jpeg(w: u32, h: u32, level: u8) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([level, (x * 255 / w) as u8, (y * 255 / h) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// Stand-in for the two cluster exporters the dashboard's resource panels read, which need a
/// kubelet and an API server: cAdvisor's `container_cpu_usage_seconds_total` and
/// `container_memory_working_set_bytes` (here the real CPU time and resident memory of the
/// wms-serve process, from `/proc/<pid>`), and kube-state-metrics'
/// `kube_pod_container_status_restarts_total` (0: the process has not restarted) and
/// `kube_service_annotations` of the entry-point Service that `wms deploy promote` annotates
/// with the promoted version (src/deploy/route.rs). Series names, types and labels are those the
/// real exporters write, in the Prometheus text format; scraped with `honor_labels` like the
/// kubelet's cAdvisor endpoint. Stops when dropped.
struct ClusterStandIn {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClusterStandIn {
    fn start(pid: u32) -> ClusterStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => answer_scrape(stream, pid),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("stand-in accept: {e}"),
                }
            }
        });
        ClusterStandIn {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ClusterStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// CPU seconds (user + system) and resident bytes of a process.
fn process_usage(pid: u32) -> (f64, u64) {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) : state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (ticks(11) + ticks(12)) as f64 / hz;
    let status = fs_err::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    (cpu, rss)
}

fn answer_scrape(mut stream: TcpStream, pid: u32) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let (cpu, rss) = process_usage(pid);
    let pod = format!(r#"namespace="{NAMESPACE}",pod="{POD}",container="wms-serve""#);
    let body = format!(
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n\
         # TYPE container_cpu_usage_seconds_total counter\n\
         container_cpu_usage_seconds_total{{{pod}}} {cpu}\n\
         # HELP container_memory_working_set_bytes Current working set in bytes.\n\
         # TYPE container_memory_working_set_bytes gauge\n\
         container_memory_working_set_bytes{{{pod}}} {rss}\n\
         # HELP kube_pod_container_status_restarts_total The number of container restarts per container.\n\
         # TYPE kube_pod_container_status_restarts_total counter\n\
         kube_pod_container_status_restarts_total{{{pod}}} 0\n\
         # HELP kube_service_annotations Kubernetes annotations converted to Prometheus labels.\n\
         # TYPE kube_service_annotations gauge\n\
         kube_service_annotations{{namespace=\"wms-system\",service=\"meters\",annotation_wms_io_promoted_version=\"2.1\"}} 1\n"
    );
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn prometheus_config(serve_metrics: &str, standin_port: u16) -> String {
    let serve = serve_metrics.trim_start_matches("http://");
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - wms.rules.yaml
scrape_configs:
  - job_name: wms-serve
    static_configs:
      - targets: ["{serve}"]
        labels:
          namespace: {NAMESPACE}
          pod: {POD}
  - job_name: cluster-stand-in
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:{standin_port}"]
"#
    )
}

/// `GET prom/api/v1/{path}` with `query`: the answer's `data`; panics on an API error.
fn prom_api(
    client: &reqwest::blocking::Client,
    prom: &str,
    path: &str,
    query: &[(&str, &str)],
) -> Value {
    let url = format!("{prom}/api/v1/{path}");
    let resp: Value = client
        .get(&url)
        .query(query)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(resp["status"], "success", "{url} {query:?}: {resp}");
    resp["data"].clone()
}

/// An instant query; panics on an API error, returns the result vector.
fn query(client: &reqwest::blocking::Client, prom: &str, expr: &str) -> Vec<Value> {
    let data = prom_api(client, prom, "query", &[("query", expr)]);
    data["result"].as_array().cloned().unwrap_or_default()
}

fn label_values(
    client: &reqwest::blocking::Client,
    prom: &str,
    label: &str,
    selector: &str,
) -> Vec<String> {
    let path = format!("label/{label}/values");
    prom_api(client, prom, &path, &[("match[]", selector)])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The window substituted for Grafana's `$__rate_interval`: the load ran for a few seconds
/// before the queries, and a 1 s scrape interval puts enough samples in it.
const RATE_WINDOW: &str = "30s";

/// Substitutes the dashboard's variables as Grafana does: `$__rate_interval`, and each
/// templating variable by its values (a multi-value one as the regex `(a|b)`).
fn substitute(expr: &str, vars: &[(String, Vec<String>)]) -> String {
    let mut out = expr.replace("$__rate_interval", RATE_WINDOW);
    // Longest names first, so `$model` never eats the start of a longer name.
    let mut vars: Vec<&(String, Vec<String>)> = vars.iter().collect();
    vars.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    for (name, values) in vars {
        let value = if values.len() == 1 {
            values[0].clone()
        } else {
            format!("({})", values.join("|"))
        };
        out = out
            .replace(&format!("${{{name}}}"), &value)
            .replace(&format!("${name}"), &value);
    }
    assert!(
        !out.contains('$') || out.contains("\"$1\""),
        "unsubstituted variable in {out}"
    );
    out
}

#[test]
fn prometheus_scraping_a_loaded_wms_serve_answers_every_dashboard_query_and_recording_rule() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let serve = ServeProcess::start(&model, &[]);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client
        .get(format!("{}/ping", serve.inference))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "wms-serve not healthy in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let models: Value = client
        .get(format!("{}/models", serve.management))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models["models"][0]["modelName"], "meters");
    let standin = ClusterStandIn::start(serve.child.id());
    let rules = rules_file();
    // The recording group's own 30 s interval would leave the rules unevaluated after a few
    // seconds of load; without it the group runs at the global 1 s.
    let mut live: serde_yaml::Value = serde_yaml::from_str(&rules).unwrap();
    for g in live["groups"].as_sequence_mut().unwrap() {
        g.as_mapping_mut().unwrap().remove("interval");
    }
    let live = serde_yaml::to_string(&live).unwrap();
    let prom = servers::start_prometheus(
        &prometheus_config(&serve.metrics, standin.port),
        &[("wms.rules.yaml", &live)],
    );

    // Wait for the first scrape of both targets, so the load below lands between samples.
    let deadline = Instant::now() + Duration::from_secs(60);
    while query(&client, &prom.url, "up == 1").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape both targets in 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Bounded load: 4 clients for 4 s, photos of three brightness levels, and a few bad
    // requests so 4xx statuses are there too.
    let load_for = Duration::from_secs(4);
    let mut workers = Vec::new();
    for i in 0..4u8 {
        let (client, url) = (
            client.clone(),
            format!("{}/predictions/meters", serve.inference),
        );
        workers.push(std::thread::spawn(move || {
            let photo = jpeg(160, 120, 40 + 80 * (i % 3));
            let started = Instant::now();
            let (mut ok, mut bad) = (0u64, 0u64);
            while started.elapsed() < load_for {
                let r = client.post(&url).body(photo.clone()).send().unwrap();
                assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
                ok += 1;
                if ok % 10 == 0 {
                    let r = client
                        .post(&url)
                        .body(b"not an image".to_vec())
                        .send()
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 400);
                    bad += 1;
                }
            }
            (ok, bad)
        }));
    }
    let (ok, bad) = workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    assert!(
        ok > 0 && bad > 0,
        "load sent {ok} good and {bad} bad requests"
    );

    // Prometheus has all of it once a scrape after the load counted every request.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = query(&client, &prom.url, "sum(wms_inference_total)");
        let seen = r
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok());
        if seen == Some((ok + bad) as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus saw {seen:?} of {} requests",
            ok + bad
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two more rule evaluations over the final samples.
    std::thread::sleep(Duration::from_secs(2));

    // Template variables first, from their own `label_values` queries, as Grafana resolves them.
    let dashboard: Value = serde_json::from_str(
        &fs_err::read_to_string(format!("{MONITORING}/dashboards/ml-metrics.json")).unwrap(),
    )
    .unwrap();
    let mut vars: Vec<(String, Vec<String>)> = Vec::new();
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap().to_string();
        if v["type"] == "datasource" {
            vars.push((name, vec!["prometheus".into()]));
            continue;
        }
        let q = v["query"]["query"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: {q} is not label_values(…)"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let selector = substitute(selector.trim(), &vars);
        let values = label_values(&client, &prom.url, label.trim(), &selector);
        assert!(!values.is_empty(), "variable {name} ({q}) has no values");
        vars.push((name, values));
    }
    assert_eq!(
        vars.iter().find(|(n, _)| n == "version").unwrap().1,
        ["2.1"]
    );

    // Every panel query returns data.
    let mut checked = 0;
    let mut failures = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = substitute(target["expr"].as_str().unwrap(), &vars);
            let result = query(&client, &prom.url, &expr);
            let values: Vec<f64> = result
                .iter()
                .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                .collect();
            if values.is_empty() || values.iter().any(|v| v.is_nan()) {
                failures.push(format!("{:?}: {expr} -> {result:?}", panel["title"]));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "panels without data:\n{}",
        failures.join("\n")
    );
    assert!(checked >= 20, "only {checked} panel queries");
    // An expression over a series nobody exports comes back empty, and would be caught above.
    let missing = substitute(r#"wms_no_such_metric{version=~"$version"}"#, &vars);
    assert!(query(&client, &prom.url, &missing).is_empty());

    // The numbers mean what they say.
    let one = |expr: &str| -> f64 {
        let r = query(&client, &prom.url, expr);
        assert_eq!(r.len(), 1, "{expr}: {r:?}");
        r[0]["value"][1].as_str().unwrap().parse().unwrap()
    };
    assert_eq!(
        one(r#"sum(wms_inference_total{model="meters",version="2.1",status="200"})"#),
        ok as f64
    );
    assert_eq!(
        one(r#"sum(wms_input_brightness_count{version="2.1"})"#),
        ok as f64
    );
    assert_eq!(
        one(r#"sum(wms_mask_coverage_count{version="2.1"})"#),
        ok as f64
    );
    let brightness = one(
        r#"sum(wms_input_brightness_sum{version="2.1"}) / sum(wms_input_brightness_count{version="2.1"})"#,
    );
    assert!(
        (0.1..0.9).contains(&brightness),
        "mean brightness {brightness}"
    );
    assert!(one(r#"sum(container_memory_working_set_bytes{container="wms-serve"})"#) > 1e6);

    // Every recording rule has a value for the loaded version.
    let v: serde_yaml::Value = serde_yaml::from_str(&rules).unwrap();
    for group in v["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            if let Some(record) = rule["record"].as_str() {
                let r = query(&client, &prom.url, &format!(r#"{record}{{version="2.1"}}"#));
                assert!(
                    r.len() == 1 && r[0]["value"][1].as_str() != Some("NaN"),
                    "recording rule {record}: {r:?}"
                );
            }
        }
    }
    // And with traffic on the promoted version and no errors, no alert is firing.
    let alerts = prom_api(&client, &prom.url, "alerts", &[]);
    let firing: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .collect();
    assert!(firing.is_empty(), "firing: {firing:?}");
    drop(prom);
    drop(standin);
}
