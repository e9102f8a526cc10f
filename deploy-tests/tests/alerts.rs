//! `deploy/prometheus/alerts.yaml`: Prometheus loads it, each alert fires in the cluster
//! states its unit tests describe and stays quiet in the others (`promtool test rules`),
//! and every alert has such a test. (That every series the rules read is one a replica
//! exports is checked against live replicas in the root package's integration tests,
//! `operations::metrics_are_prometheus_text_with_the_operational_series`, the TLS expiry
//! by the certificate rotation tests; that the fault
//! alerts fire on a live cluster, by `alerts_live.rs`.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use deploy_tests::tools::{output, promtool, repo_root, run};
use serde_json::Value;

fn rules_dir() -> std::path::PathBuf {
    repo_root().join("deploy/prometheus")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rules() -> Vec<Value> {
    yaml(&rules_dir().join("alerts.yaml"))["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

#[test]
fn prometheus_loads_the_alert_rules() {
    run(Command::new(promtool())
        .args(["check", "rules"])
        .arg(rules_dir().join("alerts.yaml")))
    .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn the_alerts_fire_when_their_unit_tests_say_and_only_then() {
    run(Command::new(promtool())
        .args(["test", "rules", "alerts.test.yaml"])
        .current_dir(rules_dir()))
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The unit tests are not vacuous: a rule whose threshold moved fails them.
#[test]
fn a_changed_threshold_fails_the_unit_tests() {
    let copy = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(rules_dir().join("alerts.yaml")).unwrap();
    // "at most half the voters" becomes "fewer than half": four voters with two left
    // would no longer be called a lost majority.
    let original = "<= max by (namespace, job) (";
    assert_eq!(
        rules.matches(original).count(),
        1,
        "the rule this test changes moved"
    );
    std::fs::write(
        copy.path().join("alerts.yaml"),
        rules.replace(original, "< max by (namespace, job) ("),
    )
    .unwrap();
    std::fs::copy(
        rules_dir().join("alerts.test.yaml"),
        copy.path().join("alerts.test.yaml"),
    )
    .unwrap();
    let out = output(
        Command::new(promtool())
            .args(["test", "rules", "alerts.test.yaml"])
            .current_dir(copy.path()),
    )
    .unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("PscMajorityOfVotersMissing"), "{printed}");
}

/// Every alert says how bad it is and what happened, and some unit test makes it fire.
#[test]
fn every_alert_is_labelled_described_and_tested_firing() {
    let tests = yaml(&rules_dir().join("alerts.test.yaml"));
    let fired: BTreeSet<String> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|test| {
            test["alert_rule_test"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|check| {
            check["exp_alerts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .filter_map(|check| check["alertname"].as_str().map(str::to_owned))
        .collect();
    let rules = rules();
    assert!(rules.len() >= 10, "{rules:?}");
    for rule in &rules {
        let name = rule["alert"].as_str().expect("only alerting rules");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ),
            "{name}: severity"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: {annotation}"
            );
        }
        assert!(fired.contains(name), "{name}: no unit test makes it fire");
    }
}
