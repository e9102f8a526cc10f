//! `deploy/` checked without a cluster: the kustomize renderings (the base and every
//! overlay) against the Kubernetes schemas and a policy linter, and every flag, port, path
//! and name in the manifests, the compose file and the Dockerfiles against the binary's
//! own command line and against each other. Needs kubectl and the Python tools of
//! `.ci/deploy-tools.txt`; fails, never skips, without them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use deploy_tests::tools::{output, python_tool, repo_root, require, run, yaml_documents};
use pageserver_controller::cli::{
    Cli, ClusterCommand, Command as CliCommand, OpsCommand, Placement, Pod, ServeArgs,
};
use serde_json::Value;

/// What `kubectl kustomize` renders, by name.
const RENDERINGS: [(&str, &str); 2] = [
    ("base", "deploy/kubernetes"),
    ("five-replicas", "deploy/kubernetes/overlays/five-replicas"),
];

/// The oldest Kubernetes the manifests are checked against (they use the StatefulSet's
/// PVC retention policy) and the newest schema kubernetes-validate ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// checkov checks that do not apply, and why:
/// - CKV_K8S_11 (CPU limits): a CPU limit throttles a busy replica in 100 ms slices, long
///   enough to miss heartbeats and cause needless elections; a request reserves CPU.
/// - CKV_K8S_15 (image pull policy Always): a replica restarting on a node must not
///   depend on the registry being reachable; tags are immutable (or digests pinned).
/// - CKV_K8S_43 (image by digest): the base cannot know the digest; an overlay pins it
///   with kustomize `images: [{name: pageserver-controller, digest: ...}]`.
/// - CKV_K8S_21 (default namespace): the namespace is chosen when applying
///   (`kubectl apply -n NS -k ...` or an overlay's `namespace:`); the base names none.
const CHECKOV_SKIPS: &str = "CKV_K8S_11,CKV_K8S_15,CKV_K8S_43,CKV_K8S_21";

fn kubectl() -> PathBuf {
    require(
        "kubectl",
        "Install kubectl (it renders kustomize: `kubectl kustomize`).",
    )
}

fn render(dir: &str) -> String {
    run(Command::new(kubectl())
        .arg("kustomize")
        .arg(repo_root().join(dir)))
    .unwrap_or_else(|e| panic!("rendering {dir}: {e:#}"))
}

fn documents(yaml: &str) -> Vec<Value> {
    yaml_documents(yaml).expect("kustomize renders valid YAML")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a rendering");
    path
}

fn kubernetes_validate(file: &Path, version: &str) -> std::process::Output {
    output(
        Command::new(python_tool("kubernetes-validate"))
            .args(["--strict", "--quiet", "--kubernetes-version", version])
            .arg(file),
    )
    .expect("running kubernetes-validate")
}

fn checkov(file: &Path) -> std::process::Output {
    output(
        Command::new(python_tool("checkov"))
            .args([
                "--framework",
                "kubernetes",
                "--compact",
                "--quiet",
                "--skip-download",
            ])
            .args(["--skip-check", CHECKOV_SKIPS])
            .arg("--file")
            .arg(file),
    )
    .expect("running checkov")
}

fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The rendered StatefulSet with its name replaced by a typo'd field: the validator must
/// reject it, or a passing validation proves nothing.
fn broken_copy(rendering: &str) -> String {
    rendering.replacen("podManagementPolicy:", "podManagementPolicyy:", 1)
}

#[test]
fn rendered_manifests_pass_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, path) in RENDERINGS {
        let file = write(dir.path(), &format!("{name}.yaml"), &render(path));
        for version in KUBERNETES_VERSIONS {
            let out = kubernetes_validate(&file, version);
            assert!(
                out.status.success(),
                "{path} does not validate against Kubernetes {version}:\n{}",
                printed(&out)
            );
        }
    }
    let broken = write(
        dir.path(),
        "broken.yaml",
        &broken_copy(&render(RENDERINGS[0].1)),
    );
    let out = kubernetes_validate(&broken, KUBERNETES_VERSIONS[0]);
    assert!(
        !out.status.success(),
        "kubernetes-validate accepted an unknown field; it validates nothing:\n{}",
        printed(&out)
    );
}

#[test]
fn rendered_manifests_pass_the_policy_linter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (name, path) in RENDERINGS {
        let file = write(dir.path(), &format!("{name}.yaml"), &render(path));
        let out = checkov(&file);
        assert!(
            out.status.success(),
            "checkov fails {path}:\n{}",
            printed(&out)
        );
        files.push(file);
    }
    // The same manifest with a privileged container must fail, or checkov checks nothing.
    let text = std::fs::read_to_string(&files[0]).expect("reading back");
    let privileged = text.replacen("privileged: false", "privileged: true", 1);
    assert_ne!(privileged, text, "the StatefulSet says privileged: false");
    let out = checkov(&write(dir.path(), "privileged.yaml", &privileged));
    assert!(
        !out.status.success() && printed(&out).contains("CKV_K8S_16"),
        "checkov accepted a privileged container:\n{}",
        printed(&out)
    );
}

/// `serve ARGS` as the binary parses them (the images' entrypoint is `serve`).
fn parse_serve(args: &[String], what: &str) -> ServeArgs {
    let argv = ["pageserver-controller", "serve"]
        .into_iter()
        .map(str::to_owned)
        .chain(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Some(CliCommand::Serve(args)),
            ..
        }) => *args,
        Ok(other) => panic!("{what}: parsed as another command: {other:?}"),
        Err(e) => panic!("{what}: the binary refuses these arguments {args:?}:\n{e}"),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn port_of(url: &str) -> u16 {
    reqwest::Url::parse(url)
        .expect("a URL")
        .port_or_known_default()
        .expect("a port")
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .expect("a URL")
        .host_str()
        .expect("a host")
        .to_owned()
}

/// A probe's or Service's port (a number or a container port's name) as a number.
fn resolve_port(port: &Value, named: &BTreeMap<String, u16>) -> u16 {
    match port {
        Value::Number(n) => n.as_u64().expect("a port number") as u16,
        Value::String(name) => *named
            .get(name)
            .unwrap_or_else(|| panic!("no container port named {name}")),
        other => panic!("not a port: {other}"),
    }
}

fn check_rendering(name: &str, docs: &[Value]) {
    let of_kind = |kind: &'static str| docs.iter().filter(move |d| d["kind"] == kind);
    let sts = of_kind("StatefulSet").next().expect("a StatefulSet");
    let sts_name = sts["metadata"]["name"].as_str().expect("a name");
    let spec = &sts["spec"];
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{name}: one container");
    let container = &containers[0];
    let args = strings(&container["args"]);
    assert!(
        container["command"].is_null(),
        "{name}: the image's entrypoint (serve) is used"
    );
    let serve = parse_serve(&args, &format!("{name}: StatefulSet args"));

    let named: BTreeMap<String, u16> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("named").to_owned(),
                p["containerPort"].as_u64().expect("a number") as u16,
            )
        })
        .collect();
    let port = named["http"];
    assert_eq!(
        serve.listen.port(),
        port,
        "{name}: --listen is the container port"
    );
    assert!(
        serve.listen.ip().is_unspecified(),
        "{name}: listen on every interface of the pod"
    );

    // The id, URL and initial cluster the pods derive from their names.
    assert!(
        serve.statefulset.id_from_hostname && serve.id.is_none(),
        "{name}: --id-from-hostname"
    );
    let template = serve
        .statefulset
        .peer_url_template
        .clone()
        .expect("--peer-url-template");
    let size = serve
        .statefulset
        .initial_cluster_size
        .expect("--initial-cluster-size");
    assert_eq!(
        u64::from(size),
        spec["replicas"].as_u64().expect("replicas"),
        "{name}: initial size = replicas"
    );
    assert_eq!(
        spec["podManagementPolicy"], "Parallel",
        "{name}: pods start together"
    );
    let peers = spec["serviceName"].as_str().expect("serviceName");
    let pod0 = Pod::from_hostname(&format!("{sts_name}-0"), Some("ns".into()))
        .expect("pod 0's name parses");
    let placement =
        Placement::new(pod0, Some(template.clone()), Some(size)).expect("the template renders");
    let url = placement.advertise_url().expect("renders").expect("a URL");
    assert_eq!(
        host_of(&url),
        format!("{sts_name}-0.{peers}.ns.svc"),
        "{name}: pod DNS of the headless Service"
    );
    assert_eq!(
        port_of(&url),
        port,
        "{name}: peers reach the container port"
    );
    assert_eq!(
        placement.initial_cluster().expect("renders").len(),
        size as usize
    );
    if template.contains("{namespace}") {
        let env = container["env"].as_array().expect("env");
        assert!(
            env.iter().any(|e| e["name"] == "POD_NAMESPACE"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"),
            "{name}: POD_NAMESPACE comes from the downward API"
        );
    }

    // Services: the headless one for peers, one for clients, both to the container port.
    let services: Vec<&Value> = of_kind("Service").collect();
    let headless = services
        .iter()
        .find(|s| s["metadata"]["name"] == peers)
        .unwrap_or_else(|| panic!("{name}: no Service {peers}"));
    assert_eq!(
        headless["spec"]["clusterIP"], "None",
        "{name}: the peers Service is headless"
    );
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"], true,
        "{name}: not-ready peers resolve"
    );
    let client = services
        .iter()
        .find(|s| s["spec"]["clusterIP"] != "None")
        .unwrap_or_else(|| panic!("{name}: no client Service"));
    let pod_labels = &spec["template"]["metadata"]["labels"];
    for service in [headless, client] {
        let selector = service["spec"]["selector"].as_object().expect("a selector");
        assert!(
            selector.iter().all(|(k, v)| &pod_labels[k] == v),
            "{name}: Service selects the pods"
        );
        for p in service["spec"]["ports"].as_array().expect("ports") {
            assert_eq!(
                resolve_port(&p["targetPort"], &named),
                port,
                "{name}: Service targets the container port"
            );
        }
    }

    // Probes: /status for start-up and liveness (never /ready), /ready for readiness.
    for (probe, path) in [
        ("startupProbe", "/status"),
        ("livenessProbe", "/status"),
        ("readinessProbe", "/ready"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{name}: {probe}");
        assert_eq!(
            resolve_port(&get["port"], &named),
            port,
            "{name}: {probe} port"
        );
    }
    // preStop: the image's binary steps this replica down, through the container's
    // port on loopback, with the peer token; then it pauses.
    let hook = strings(&container["lifecycle"]["preStop"]["exec"]["command"]);
    let (program, hook_args) = hook.split_first().expect("a preStop exec command");
    assert_eq!(
        program, "/usr/local/bin/pageserver-controller",
        "{name}: preStop runs the image's binary (no shell in the image)"
    );
    let argv = std::iter::once("pageserver-controller".to_owned()).chain(hook_args.iter().cloned());
    let (client, pause) = match Cli::try_parse_from(argv) {
        Ok(Cli {
            command:
                Some(CliCommand::Ops(OpsCommand::Cluster(ClusterCommand::StepDown {
                    client,
                    then_wait_s,
                }))),
            ..
        }) => (client, then_wait_s),
        Ok(other) => panic!("{name}: preStop parsed as another command: {other:?}"),
        Err(e) => panic!("{name}: the binary refuses the preStop command {hook:?}:\n{e}"),
    };
    assert_eq!(
        port_of(&client.url),
        port,
        "{name}: preStop calls the container port"
    );
    assert_eq!(
        host_of(&client.url),
        "127.0.0.1",
        "{name}: preStop calls its own pod"
    );
    assert_eq!(
        client.token_file, serve.peer_token_file,
        "{name}: preStop uses the peer token"
    );
    assert!(
        pause >= 1,
        "{name}: preStop pauses for the Service to drop the pod"
    );
    // The grace period covers the hook's handoff and pause, then SIGTERM's handoff (when
    // the replica leads again) and drain, with margin.
    let handoff = serve.handoff_timeout_ms.div_ceil(1000);
    let drain = pageserver_controller::cli::DRAIN.as_secs();
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("a grace period");
    assert!(
        grace >= handoff + pause + handoff + drain + 10,
        "{name}: grace {grace}s < preStop handoff {handoff}s + pause {pause}s + SIGTERM \
         handoff {handoff}s + drain {drain}s + margin"
    );

    // Paths: the data dir one level inside the volume claim's mount, key and token where
    // their Secrets are mounted.
    let mounts: BTreeMap<String, String> = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("a name").to_owned(),
                m["mountPath"].as_str().expect("a path").to_owned(),
            )
        })
        .collect();
    let claim = spec["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("a volume claim");
    let data_mount = Path::new(&mounts[claim]);
    assert_eq!(
        serve.data_dir.parent(),
        Some(data_mount),
        "{name}: --data-dir one level inside {claim}'s mount"
    );
    let volumes: BTreeMap<String, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("a name").to_owned(), v))
        .collect();
    let secret_file = |path: &Path| -> bool {
        mounts.iter().any(|(volume, mount)| {
            let Some(secret) = volumes.get(volume).map(|v| &v["secret"]) else {
                return false;
            };
            if secret.is_null() {
                return false;
            }
            let items = secret["items"].as_array();
            path == Path::new(mount)
                || items.is_some_and(|items| {
                    items
                        .iter()
                        .any(|i| Path::new(mount).join(i["path"].as_str().unwrap_or("")) == path)
                })
        })
    };
    let key = serve.auth_public_key.clone().expect("--auth-public-key");
    let token = serve.peer_token_file.clone().expect("--peer-token-file");
    assert!(
        secret_file(&key),
        "{name}: --auth-public-key {} is a mounted Secret",
        key.display()
    );
    assert!(
        secret_file(&token),
        "{name}: --peer-token-file {} is a file of a mounted Secret",
        token.display()
    );
    assert!(!serve.insecure_no_auth, "{name}: authentication on");

    // Who runs it: the images' user, nothing more.
    let user = image_user();
    let context = &container["securityContext"];
    assert_eq!(
        context["runAsUser"].as_u64(),
        Some(user),
        "{name}: the image's user"
    );
    assert_eq!(context["readOnlyRootFilesystem"], true);
    assert_eq!(context["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&context["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        pod["securityContext"]["fsGroup"].as_u64(),
        Some(user),
        "{name}: volumes writable by the user"
    );

    let pdb = of_kind("PodDisruptionBudget")
        .next()
        .expect("a PodDisruptionBudget");
    assert_eq!(
        pdb["spec"]["maxUnavailable"], 1,
        "{name}: one replica at a time"
    );
    let selector = pdb["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("a selector");
    assert!(
        selector.iter().all(|(k, v)| &pod_labels[k] == v),
        "{name}: the PDB selects the pods"
    );
}

/// The numeric user both Dockerfiles run as, checked to be the same.
fn image_user() -> u64 {
    let mut users = Vec::new();
    for file in ["deploy/Dockerfile", "deploy/Dockerfile.scratch"] {
        let text = std::fs::read_to_string(repo_root().join(file)).expect("reading a Dockerfile");
        let user = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .unwrap_or_else(|| panic!("{file} sets no USER"));
        let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
        assert_eq!(uid, gid, "{file}: group = user");
        users.push(
            uid.parse::<u64>()
                .unwrap_or_else(|_| panic!("{file}: USER is numeric")),
        );
        let entrypoint = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("ENTRYPOINT "))
            .unwrap_or_else(|| panic!("{file} sets no ENTRYPOINT"));
        let entrypoint: Vec<String> =
            serde_json::from_str(entrypoint).expect("ENTRYPOINT in exec form");
        assert_eq!(
            entrypoint,
            ["/usr/local/bin/pageserver-controller", "serve"],
            "{file}: the entrypoint"
        );
        assert!(text.contains("EXPOSE 7001"), "{file}: exposes the API port");
    }
    assert_eq!(users[0], users[1], "both images run as the same user");
    assert!(users[0] >= 10_000, "a user that owns nothing on the host");
    users[0]
}

#[test]
fn manifest_flags_ports_and_paths_are_ones_the_binary_and_the_manifests_agree_on() {
    for (name, path) in RENDERINGS {
        check_rendering(name, &documents(&render(path)));
    }
}

#[test]
fn compose_flags_and_ports_are_ones_the_binary_accepts() {
    // The compose tool itself checks the file.
    let compose = repo_root().join("deploy/compose.yaml");
    let checked = output(
        deploy_tests::compose::tool()
            .arg("-f")
            .arg(&compose)
            .args(["config", "-q"]),
    )
    .expect("running docker compose config");
    assert!(
        checked.status.success(),
        "compose.yaml does not validate:\n{}",
        printed(&checked)
    );

    let services = deploy_tests::compose::services().expect("reading compose.yaml");
    assert_eq!(services.len(), 3, "three replicas");
    let user = image_user();
    for service in services.values() {
        let what = format!("compose service {}", service.name);
        let serve = parse_serve(&service.command, &what);
        assert_eq!(
            service.user.as_deref(),
            Some(format!("{user}:{user}").as_str()),
            "{what}: the image's user"
        );
        let hostname = service
            .hostname
            .clone()
            .unwrap_or_else(|| panic!("{what}: a hostname"));
        assert_eq!(
            hostname, service.name,
            "{what}: the host name is the service's DNS name"
        );
        let template = serve
            .statefulset
            .peer_url_template
            .clone()
            .expect("--peer-url-template");
        let size = serve
            .statefulset
            .initial_cluster_size
            .expect("--initial-cluster-size");
        assert_eq!(
            size as usize,
            services.len(),
            "{what}: initial size = services"
        );
        let pod = Pod::from_hostname(&hostname, None).expect("NAME-ORDINAL");
        let placement =
            Placement::new(pod, Some(template), Some(size)).expect("the template renders");
        for (id, member) in placement.initial_cluster().expect("renders") {
            let host = host_of(&member.url);
            assert!(
                services.contains_key(&host),
                "{what}: member {id} at {host}, which is no service"
            );
            assert_eq!(
                port_of(&member.url),
                serve.listen.port(),
                "{what}: peers reach --listen"
            );
        }
        // Published on loopback only: these replicas run without authentication.
        assert!(
            serve.insecure_no_auth,
            "{what}: the laptop cluster runs without keys"
        );
        assert_eq!(service.ports.len(), 1, "{what}: one published port");
        let (host, container) = service.ports[0].rsplit_once(':').expect("HOST:CONTAINER");
        assert!(
            host.starts_with("127.0.0.1:"),
            "{what}: published on loopback only"
        );
        assert_eq!(
            container.parse::<u16>().expect("a port"),
            serve.listen.port(),
            "{what}: publishes --listen"
        );
        let mount = service
            .volumes
            .iter()
            .find_map(|v| v.split_once(':').map(|(_, target)| target.to_owned()))
            .unwrap_or_else(|| panic!("{what}: a volume"));
        assert_eq!(
            serve.data_dir.parent(),
            Some(Path::new(&mount)),
            "{what}: --data-dir inside the volume"
        );
    }
}

#[test]
fn the_overlay_only_changes_the_size() {
    let base = documents(&render(RENDERINGS[0].1));
    let five = documents(&render(RENDERINGS[1].1));
    assert_eq!(base.len(), five.len());
    let sts = |docs: &[Value]| {
        docs.iter()
            .find(|d| d["kind"] == "StatefulSet")
            .expect("a StatefulSet")
            .clone()
    };
    let (mut a, mut b) = (sts(&base), sts(&five));
    assert_eq!(
        (
            a["spec"]["replicas"].as_u64(),
            b["spec"]["replicas"].as_u64()
        ),
        (Some(3), Some(5))
    );
    for doc in [&mut a, &mut b] {
        doc["spec"]["replicas"] = Value::Null;
        let args = doc["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array_mut()
            .expect("args");
        args.retain(|arg| {
            !arg.as_str()
                .is_some_and(|a| a.starts_with("--initial-cluster-size="))
        });
    }
    assert_eq!(
        a, b,
        "the five-replica overlay changes replicas and --initial-cluster-size only"
    );
}
