//! kube-rs (the client `wms deploy` uses) against the stand-in: every answer it parses here is
//! one the real API server gives in that shape (Status errors, watch events and bookmarks,
//! lists without per-item kind, logs, aggregated and legacy discovery).

use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use super::{KubeApi, Options, Outcome};

async fn client(api: &KubeApi, dir: &std::path::Path) -> Client {
    // kube's rustls needs a process-wide crypto provider; wms installs ring the same way.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = api.write_kubeconfig(dir, "ci");
    let kc = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let opts = KubeConfigOptions {
        context: Some("ci".into()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kc, &opts)
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn api_status(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Server-side apply of the Deployment `web` running `image`, with `params` (the field manager).
async fn apply_web(
    deployments: &Api<Deployment>,
    params: PatchParams,
    image: &str,
) -> kube::Result<Deployment> {
    deployments
        .patch("web", &params, &Patch::Apply(&deployment(image)))
        .await
}

fn deployment(image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "m1"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "serve", "image": image}]}}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_applies_watches_reads_logs_and_sees_conflicts() {
    let api = KubeApi::start(Options {
        token: Some("t0k3n".into()),
        ready_after: Duration::from_millis(100),
        ..Options::default()
    });
    api.set_logs("m1", &["a", "b", "c"]);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&api, dir.path()).await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "m1"}}),
    )
    .unwrap();
    namespaces
        .patch("m1", &PatchParams::apply("wms"), &Patch::Apply(&ns))
        .await
        .expect("apply namespace");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "m1");
    let applied = apply_web(&deployments, PatchParams::apply("wms"), "r/web@sha256:aa")
        .await
        .expect("apply deployment");
    let rv = applied.metadata.resource_version.clone().unwrap();

    // Follow it with a watch until the controller reports it available.
    let wp = WatchParams::default()
        .fields("metadata.name=web")
        .timeout(10);
    let mut stream = deployments.watch(&wp, &rv).await.expect("watch").boxed();
    let mut done = false;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("event in time")
        .expect("stream")
    {
        if let WatchEvent::Modified(d) = ev {
            let st = d.status.unwrap_or_default();
            if st.available_replicas == Some(2) && st.observed_generation == d.metadata.generation {
                done = true;
                break;
            }
        }
    }
    assert!(done, "the watch showed the rollout finishing");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "m1");
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods");
    assert_eq!(list.items.len(), 2);
    let name = list.items[0].metadata.name.clone().unwrap();
    let logs = pods
        .logs(
            &name,
            &LogParams {
                tail_lines: Some(2),
                ..LogParams::default()
            },
        )
        .await
        .expect("logs");
    assert_eq!(logs, "b\nc\n");

    let conflict = apply_web(&deployments, PatchParams::apply("other"), "r/web@sha256:bb")
        .await
        .unwrap_err();
    let (code, message) = api_status(conflict);
    assert_eq!(code, 409);
    assert_eq!(
        message,
        "Apply failed with 1 conflict: conflict with \"wms\": .spec.template.spec.containers[name=\"serve\"].image"
    );
    let forced = PatchParams::apply("other").force();
    apply_web(&deployments, forced, "r/web@sha256:bb")
        .await
        .expect("forced apply");

    // A watch from before a compaction: ERROR 410, which watchers answer with a fresh list.
    api.compact();
    let mut stream = deployments
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("stream") {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    let _ = Outcome::Available;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lease_race_missing_objects_and_auth() {
    let api = KubeApi::start(Options {
        token: Some("t0k3n".into()),
        ..Options::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let client = client(&api, dir.path()).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "lock"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).unwrap();
    let created = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create lease");
    let (code, message) = api_status(
        leases
            .create(&PostParams::default(), &lease)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code, message.as_str()),
        (409, "leases.coordination.k8s.io \"lock\" already exists")
    );
    let mut first = created.clone();
    first.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let mut second = created.clone();
    second.spec.as_mut().unwrap().holder_identity = Some("c".into());
    leases
        .replace("lock", &PostParams::default(), &first)
        .await
        .expect("first writer wins");
    let (code, _) = api_status(
        leases
            .replace("lock", &PostParams::default(), &second)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let (code, message) = api_status(cms.get("x").await.unwrap_err());
    assert_eq!(
        (code, message.as_str()),
        (404, "configmaps \"x\" not found")
    );
    assert!(cms.get_opt("x").await.expect("get_opt").is_none());

    api.deny("list", "pods", "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (code, message) = api_status(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 403);
    assert!(
        message.contains(
            "cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
        "{message}"
    );

    // Discovery, both ways kube-rs can do it.
    let legacy = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("legacy discovery");
    let aggregated = kube::discovery::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .expect("aggregated discovery");
    for d in [&legacy, &aggregated] {
        assert!(
            d.has_group("apps")
                && d.has_group("coordination.k8s.io")
                && !d.has_group("monitoring.coreos.com")
        );
    }

    let wrong = KubeApi::start(Options {
        token: Some("other".into()),
        ..Options::default()
    });
    let kc = Kubeconfig::read_from(api.write_kubeconfig(dir.path(), "ci")).unwrap();
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.cluster_url = wrong.url().parse().unwrap();
    let bad = Client::try_from(config).unwrap();
    let (code, _) = api_status(
        Api::<Namespace>::all(bad)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(
        code, 401,
        "kube-rs sends the token over plain HTTP and the server checks it"
    );
}
