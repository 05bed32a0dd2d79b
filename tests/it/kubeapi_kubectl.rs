//! The real `kubectl` (1.32) against the in-test API server (`kubeapi`): what kubectl accepts
//! from it keeps the stand-in honest.

use std::process::{Command, Output};
use std::time::Duration;

use crate::kubeapi::{KubeApi, Options, Outcome};

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run kubectl")
}

#[test]
#[ignore]
fn explore() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(Options::default());
    let kc = api.write_kubeconfig(dir.path(), "ci");
    std::fs::write(dir.path().join("o.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: m1\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: m1\ndata:\n  a: b\n").unwrap();
    let f = dir.path().join("o.yaml");
    for args in [
        vec![
            "apply",
            "--server-side",
            "--field-manager=wms",
            "-f",
            f.to_str().unwrap(),
            "-v=8",
        ],
        vec!["get", "cm", "-n", "m1", "-o", "json"],
    ] {
        let o = kubectl(&kc, &args);
        println!(
            "=== {:?} rc={:?}\n{}\n{}",
            args,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let _ = (Outcome::Available, Duration::ZERO);
}
