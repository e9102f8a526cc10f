//! What ships for a Prometheus run by the Prometheus Operator: the kustomize component
//! `deploy/kubernetes/components/monitoring` (a ServiceMonitor) and
//! `deploy/prometheus/prometheusrule.sh` (alerts.yaml as a PrometheusRule). The
//! operator's CRDs are not in kubernetes-validate's schemas, so these check what matters
//! by hand: every replica scraped exactly once under a job the rules match, and the
//! rules carried over unchanged.

use std::path::Path;
use std::process::Command;

use deploy_tests::tools::{output, repo_root, require, run, yaml_documents};
use serde_json::Value;

fn documents(yaml: &str) -> Vec<Value> {
    yaml_documents(yaml).expect("valid YAML")
}

fn render(dir: &Path) -> Vec<Value> {
    let kubectl = require(
        "kubectl",
        "Install kubectl (it renders kustomize: `kubectl kustomize`).",
    );
    documents(
        &run(Command::new(kubectl).arg("kustomize").arg(dir))
            .unwrap_or_else(|e| panic!("rendering {}: {e:#}", dir.display())),
    )
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// Renders an overlay of the base that adds a label to everything, selectors included
/// (as one of two clusters in a namespace needs), with `components`.
fn overlay(kubernetes: &Path, name: &str, components: &str) -> Vec<Value> {
    let overlay = kubernetes.join("overlays").join(name);
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - ../../base\n{components}\
             labels:\n  - pairs:\n      app.kubernetes.io/instance: east\n    \
             includeSelectors: true\n"
        ),
    )
    .unwrap();
    render(&overlay)
}

/// Overlays of the base with and without the component, as an operator would write them
/// (kustomize takes only relative paths, so in a copy of `deploy/kubernetes`).
#[test]
fn the_monitoring_component_scrapes_every_replica_once_under_a_job_the_rules_match() {
    let copy = tempfile::tempdir().unwrap();
    let kubernetes = copy.path().join("kubernetes");
    copy_tree(&repo_root().join("deploy/kubernetes"), &kubernetes);
    let monitored = overlay(
        &kubernetes,
        "monitored",
        "components:\n  - ../../components/monitoring\n",
    );
    let base = overlay(&kubernetes, "plain", "");

    // The component adds its ServiceMonitor and changes nothing else.
    let monitors = of_kind(&monitored, "ServiceMonitor");
    assert_eq!(monitors.len(), 1, "{monitors:#?}");
    let monitor = monitors[0];
    let rest: Vec<&Value> = monitored
        .iter()
        .filter(|d| d["kind"] != "ServiceMonitor")
        .collect();
    assert_eq!(rest, base.iter().collect::<Vec<_>>());

    // It selects one Service, the one that lists every pod, ready or not: a Service per
    // match would scrape each pod again under a second job, and every alert would fire
    // twice. The overlay's label is in its selector too, so another cluster's peers
    // Service in the namespace is not selected.
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(
        monitor["spec"]["selector"]["matchExpressions"].is_null(),
        "only matchLabels are checked here"
    );
    assert_eq!(
        selector["app.kubernetes.io/instance"], "east",
        "{selector:?}"
    );
    let services = of_kind(&base, "Service");
    assert!(services.len() >= 2, "{services:#?}");
    let selected: Vec<&Value> = services
        .iter()
        .copied()
        .filter(|s| {
            selector
                .iter()
                .all(|(k, v)| &s["metadata"]["labels"][k.as_str()] == v)
        })
        .collect();
    assert_eq!(selected.len(), 1, "selected: {selected:#?}");
    let service = selected[0];
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    let statefulset = &of_kind(&base, "StatefulSet")[0];
    assert_eq!(
        statefulset["spec"]["serviceName"], service["metadata"]["name"],
        "the Service that gives the pods their names lists all of them"
    );

    // One endpoint: /metrics on the Service's named port, with the Service's name as
    // the job (no jobLabel), which the rules' job matchers must accept.
    let endpoints = monitor["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{endpoints:#?}");
    let endpoint = &endpoints[0];
    assert_eq!(endpoint["path"], "/metrics");
    let port = endpoint["port"].as_str().expect("a named port");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port),
        "the Service has no port named {port}"
    );
    assert!(monitor["spec"]["jobLabel"].is_null());
    let job = service["metadata"]["name"].as_str().unwrap();
    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yaml")).unwrap();
    let matcher = r#"job=~".*pageserver-controller.*""#;
    assert!(rules.contains(matcher), "the rules' job matcher changed");
    assert!(
        job.contains("pageserver-controller"),
        "job {job} is not matched by {matcher}"
    );
}

fn prometheusrule(args: &[&str]) -> std::process::Output {
    output(Command::new(repo_root().join("deploy/prometheus/prometheusrule.sh")).args(args))
        .expect("running prometheusrule.sh")
}

#[test]
fn prometheusrule_sh_carries_the_alert_rules_over_unchanged() {
    let out = prometheusrule(&[
        "release=prometheus",
        "team.example/owner=storage",
        "on=yes",
        "z=1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    // Quoted, keys and values: kubectl's YAML 1.1 reader takes a bare `on` for true, and
    // a bare 1 is a number to any reader, where a label value must be a string.
    assert!(printed.contains("\"on\": \"yes\""), "{printed}");
    let docs = documents(&printed);
    assert_eq!(docs.len(), 1, "{docs:#?}");
    let rule = &docs[0];
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(rule["metadata"]["labels"]["team.example/owner"], "storage");
    assert_eq!(rule["metadata"]["labels"]["on"], "yes");
    assert_eq!(rule["metadata"]["labels"]["z"], "1");
    let alerts: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yaml")).unwrap(),
    )
    .unwrap();
    assert!(alerts["groups"].as_array().is_some_and(|g| !g.is_empty()));
    assert_eq!(rule["spec"]["groups"], alerts["groups"]);
    assert_eq!(
        rule["spec"].as_object().unwrap().len(),
        1,
        "spec: groups only"
    );

    // A label Kubernetes would refuse prints nothing (half a manifest piped to kubectl).
    let long = "a".repeat(64);
    for bad in [
        "release=a b",
        "release",
        "=x",
        "a\"b=c",
        "-x=1",
        "a/b/c=1",
        "/x=1",
        "Team.example/x=1",
        "x=a.",
        "x=a\nb",
        &format!("x={long}"),
        &format!("{long}=x"),
        "app.kubernetes.io/name=other",
        "x=café",
    ] {
        let out = prometheusrule(&[bad]);
        assert!(!out.status.success(), "{bad}: {out:?}");
        assert!(out.stdout.is_empty(), "{bad}: printed {:?}", out.stdout);
        assert!(!out.stderr.is_empty(), "{bad}: no message");
    }
    // A label given twice would print a duplicate key.
    let out = prometheusrule(&["release=a", "release=b"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "printed {:?}", out.stdout);
}
