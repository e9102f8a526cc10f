//! A cluster of replicas as Docker containers shaped like StatefulSet pods: container
//! `PREFIX-psc-N` has host name `psc-N` (so `--id-from-hostname` gives replica id N+1),
//! the network alias `psc-N` on a private network (so peers reach it by that name, like
//! a headless Service's pod DNS), its own named volume (its PVC), and its API published
//! on a loopback port that stays the same across restarts and replacements. The test
//! process only ever talks to 127.0.0.1.
//!
//! Everything a run creates carries the label `psc.deploy-test=RUN` and is removed when
//! the [`ContainerCluster`] is dropped, also when a test panics (after printing every
//! container's log tail).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use pageserver_controller::client::{poll_until, Client};

use crate::{settled, tools};

/// Runs `docker ARGS` off the async runtime; stdout, or an error with stderr.
pub async fn docker(args: Vec<String>) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || tools::run(Command::new("docker").args(&args)))
        .await
        .context("the docker command's thread panicked")?
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The preStop command of `deploy/kubernetes/base/statefulset.yaml`, as the kubelet would
/// run it in the container.
pub fn pre_stop_hook() -> anyhow::Result<Vec<String>> {
    let path = tools::repo_root().join("deploy/kubernetes/base/statefulset.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).context("statefulset.yaml is not YAML")?;
    let command = &doc["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]
        ["command"];
    let command: Vec<String> =
        serde_yaml::from_value(command.clone()).context("the preStop hook is no exec command")?;
    if command.is_empty() {
        bail!("the preStop hook is no exec command");
    }
    Ok(command)
}

/// Fails loudly if the Docker engine does not answer.
pub fn require_docker() {
    tools::require("docker", "Install Docker Engine and start the daemon.");
    if let Err(e) =
        tools::run(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]))
    {
        panic!(
            "the Docker engine does not answer; the Docker deploy test needs it running ({e:#}). Run \
             everything else with: cargo test --workspace --exclude deploy-tests"
        );
    }
}

/// Builds the scratch image as `tag` with `deploy/build-image.sh --profile image-test`
/// (unoptimized, so it builds fast; incremental in target/static).
pub async fn build_image(tag: &str) -> anyhow::Result<()> {
    let tag = tag.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(tools::repo_root().join("deploy/build-image.sh"))
            .args(["--profile", "image-test", "--tag", &tag])
            .stdout(std::process::Stdio::null())
            .status()
    })
    .await
    .context("the build thread panicked")?
    .context("running deploy/build-image.sh")?;
    if !status.success() {
        bail!("deploy/build-image.sh failed: {status}");
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound, then released for Docker to publish).
fn free_port() -> anyhow::Result<u16> {
    pageserver_controller::loopback::free_port().context("finding a free port")
}

/// One pod's fixed parts.
#[derive(Debug, Clone)]
pub struct Pod {
    pub ordinal: u32,
    pub port: u16,
    pub container: String,
    pub volume: String,
    /// The image its current container runs.
    pub image: String,
}

impl Pod {
    pub fn id(&self) -> u64 {
        u64::from(self.ordinal) + 1
    }

    pub fn hostname(&self) -> String {
        format!("psc-{}", self.ordinal)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

pub struct ContainerCluster {
    pub run: String,
    pub network: String,
    /// `serve` arguments every container gets (the image's entrypoint is `serve`).
    pub args: Vec<String>,
    /// Extra `docker run` options every container gets (mounts of keys, ...).
    pub run_options: Vec<String>,
    pub pods: BTreeMap<u32, Pod>,
    pub token: Option<String>,
    /// Images to remove at the end.
    pub images: Vec<String>,
    /// Host directories to remove at the end.
    pub dirs: Vec<PathBuf>,
}

impl ContainerCluster {
    /// Creates the private network; no container yet.
    pub async fn new(
        run: &str,
        args: Vec<String>,
        run_options: Vec<String>,
    ) -> anyhow::Result<ContainerCluster> {
        let network = format!("{run}-net");
        docker(strings(&[
            "network",
            "create",
            "--label",
            &format!("psc.deploy-test={run}"),
            &network,
        ]))
        .await?;
        Ok(ContainerCluster {
            run: run.to_owned(),
            network,
            args,
            run_options,
            pods: BTreeMap::new(),
            token: None,
            images: Vec::new(),
            dirs: Vec::new(),
        })
    }

    pub fn pod(&self, ordinal: u32) -> &Pod {
        &self.pods[&ordinal]
    }

    pub fn client(&self, ordinal: u32) -> Client {
        Client::new(self.pod(ordinal).url())
            .with_token(self.token.clone())
            .with_timeout(Duration::from_secs(10))
    }

    /// (replica id, URL) of the given ordinals, for traffic.
    pub fn endpoints(&self, ordinals: impl IntoIterator<Item = u32>) -> Vec<(u64, String)> {
        ordinals
            .into_iter()
            .map(|o| (self.pod(o).id(), self.pod(o).url()))
            .collect()
    }

    /// Starts pod `ordinal` on `image`: a new container on the pod's volume (created
    /// empty by Docker on first use).
    pub async fn run(&mut self, ordinal: u32, image: &str) -> anyhow::Result<()> {
        if !self.pods.contains_key(&ordinal) {
            let pod = Pod {
                ordinal,
                port: free_port()?,
                container: format!("{}-psc-{ordinal}", self.run),
                volume: format!("{}-data-{ordinal}", self.run),
                image: image.to_owned(),
            };
            docker(strings(&[
                "volume",
                "create",
                "--label",
                &format!("psc.deploy-test={}", self.run),
                &pod.volume,
            ]))
            .await?;
            self.pods.insert(ordinal, pod);
        }
        let pod = self.pods.get_mut(&ordinal).expect("just inserted");
        pod.image = image.to_owned();
        let mut args = strings(&[
            "run",
            "--detach",
            "--name",
            &pod.container,
            "--label",
            &format!("psc.deploy-test={}", self.run),
            "--hostname",
            &pod.hostname(),
            "--network",
            &self.network,
            "--network-alias",
            &pod.hostname(),
            "--publish",
            &format!("127.0.0.1:{}:7001", pod.port),
            "--volume",
            &format!("{}:/var/lib/pageserver-controller", pod.volume),
            // As in compose.yaml and the StatefulSet: no root, no capabilities, no writes
            // outside the volume.
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges:true",
            "--stop-timeout",
            "30",
            // Like the kubelet (restartPolicy: Always) and compose.yaml: a replica that
            // exits with an error is started again. `docker stop` and `docker kill` are
            // not undone by it.
            "--restart",
            "on-failure",
        ]);
        args.extend(self.run_options.iter().cloned());
        args.push(image.to_owned());
        args.extend(self.args.iter().cloned());
        docker(args)
            .await
            .with_context(|| format!("starting pod {ordinal}"))?;
        Ok(())
    }

    /// SIGKILL, like a node that loses power; the container stays for [`Self::start`].
    pub async fn kill(&self, ordinal: u32) -> anyhow::Result<()> {
        docker(strings(&["kill", &self.pod(ordinal).container]))
            .await
            .map(drop)
    }

    /// Starts a stopped or killed container again, on the same volume.
    pub async fn start(&self, ordinal: u32) -> anyhow::Result<()> {
        docker(strings(&["start", &self.pod(ordinal).container]))
            .await
            .map(drop)
    }

    /// What the kubelet runs in the container before SIGTERM: the StatefulSet's preStop
    /// command ([`pre_stop_hook`]), whose output is returned.
    pub async fn pre_stop(&self, ordinal: u32, hook: &[String]) -> anyhow::Result<String> {
        let mut args = strings(&["exec", &self.pod(ordinal).container]);
        args.extend(hook.iter().cloned());
        docker(args)
            .await
            .with_context(|| format!("the preStop hook in pod {ordinal}"))
    }

    /// SIGTERM and wait for the exit (what Kubernetes does after preStop); checks that
    /// the replica exited cleanly (0) rather than being killed at the grace period.
    pub async fn stop(&self, ordinal: u32) -> anyhow::Result<()> {
        let container = &self.pod(ordinal).container;
        docker(strings(&["stop", "--time", "30", container])).await?;
        let code = docker(strings(&[
            "inspect",
            "--format",
            "{{.State.ExitCode}}",
            container,
        ]))
        .await?;
        if code.trim() != "0" {
            bail!("pod {ordinal} exited with {} after SIGTERM", code.trim());
        }
        Ok(())
    }

    /// Removes a stopped container (its volume stays).
    pub async fn remove_container(&self, ordinal: u32) -> anyhow::Result<()> {
        docker(strings(&["rm", "--force", &self.pod(ordinal).container]))
            .await
            .map(drop)
    }

    /// Removes the pod's container and volume (a scaled-away pod whose PVC is deleted, or
    /// a lost disk).
    pub async fn delete(&mut self, ordinal: u32) -> anyhow::Result<()> {
        self.remove_container(ordinal).await?;
        let pod = self.pods.remove(&ordinal).context("no such pod")?;
        docker(strings(&["volume", "rm", &pod.volume]))
            .await
            .map(drop)
    }

    /// Replaces the pod's volume with an empty one (the container must be gone).
    pub async fn wipe_volume(&self, ordinal: u32) -> anyhow::Result<()> {
        let pod = self.pod(ordinal);
        docker(strings(&["volume", "rm", &pod.volume])).await?;
        docker(strings(&[
            "volume",
            "create",
            "--label",
            &format!("psc.deploy-test={}", self.run),
            &pod.volume,
        ]))
        .await
        .map(drop)
    }

    pub async fn disconnect(&self, ordinal: u32) -> anyhow::Result<()> {
        docker(strings(&[
            "network",
            "disconnect",
            &self.network,
            &self.pod(ordinal).container,
        ]))
        .await
        .map(drop)
    }

    pub async fn connect(&self, ordinal: u32) -> anyhow::Result<()> {
        let pod = self.pod(ordinal);
        docker(strings(&[
            "network",
            "connect",
            "--alias",
            &pod.hostname(),
            &self.network,
            &pod.container,
        ]))
        .await
        .map(drop)
    }

    /// The image id a pod's container runs.
    pub async fn image_id_of(&self, ordinal: u32) -> anyhow::Result<String> {
        let out = docker(strings(&[
            "inspect",
            "--format",
            "{{.Image}}",
            &self.pod(ordinal).container,
        ]))
        .await?;
        Ok(out.trim().to_owned())
    }

    /// How often Docker restarted the pod's current container after a failure.
    pub async fn restarts(&self, ordinal: u32) -> anyhow::Result<u32> {
        let out = docker(strings(&[
            "inspect",
            "--format",
            "{{.RestartCount}}",
            &self.pod(ordinal).container,
        ]))
        .await?;
        out.trim().parse().context("a restart count")
    }

    /// The last lines of a pod's log.
    pub fn logs(&self, ordinal: u32, lines: usize) -> String {
        let out = tools::output(Command::new("docker").args([
            "logs",
            "--tail",
            &lines.to_string(),
            &self.pod(ordinal).container,
        ]));
        match out {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(no log: {e:#})"),
        }
    }

    /// Waits until `check` yields `Some`, polling every 200 ms; an error naming `what`.
    pub async fn wait_for<T, F, Fut>(
        &self,
        what: &str,
        deadline: Duration,
        check: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        Ok(poll_until(what, deadline, settled::POLL_EVERY, check).await?)
    }

    /// Waits until pod `ordinal` answers `/ready` (knows a leader with a quorum, caught up).
    pub async fn wait_ready(&self, ordinal: u32, deadline: Duration) -> anyhow::Result<()> {
        let client = self.client(ordinal);
        self.wait_for(&format!("pod {ordinal} to be ready"), deadline, || {
            let client = client.clone();
            async move { client.ready().await.ok().map(drop) }
        })
        .await
    }

    /// The leader that pods 0..3 other than `ordinal` agree on, once they do, with all
    /// three replicas still voters.
    pub async fn leader_of_the_others(
        &self,
        ordinal: u32,
        deadline: Duration,
    ) -> anyhow::Result<u64> {
        let others: Vec<u32> = (0..3).filter(|o| *o != ordinal).collect();
        self.wait_for_voters(&others, &[1, 2, 3], deadline).await
    }

    /// Waits until every pod in `ordinals` is ready and agrees on one leader that reports
    /// exactly `voters` as voters, no learner and no half-done change; the leader's id.
    pub async fn wait_for_voters(
        &self,
        ordinals: &[u32],
        voters: &[u64],
        deadline: Duration,
    ) -> anyhow::Result<u64> {
        let members: Vec<Client> = ordinals.iter().map(|o| self.client(*o)).collect();
        // Replica id N is pod N-1 (`--id-from-hostname`).
        let client_of = |id: u64| {
            let ordinal = u32::try_from(id.checked_sub(1)?).ok()?;
            self.pods
                .contains_key(&ordinal)
                .then(|| self.client(ordinal))
        };
        settled::wait_until_settled(&members, voters, client_of, deadline)
            .await
            .with_context(|| format!("pods {ordinals:?}"))
    }

    /// Removes everything this run created. Best effort: reports what it could not do.
    fn clean_up(&mut self) {
        let label = format!("label=psc.deploy-test={}", self.run);
        let list = |what: &[&str]| -> Vec<String> {
            tools::run(Command::new("docker").args(what).args(["--filter", &label]))
                .map(|out| out.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let containers = list(&["ps", "--all", "--quiet"]);
        let volumes = list(&["volume", "ls", "--quiet"]);
        let mut failures = Vec::new();
        let mut remove = |args: Vec<String>| {
            if args.len() > 2 {
                if let Err(e) = tools::run(Command::new("docker").args(&args)) {
                    failures.push(format!("{e:#}"));
                }
            }
        };
        remove([vec!["rm".into(), "--force".into()], containers].concat());
        remove([vec!["volume".into(), "rm".into()], volumes].concat());
        remove(vec!["network".into(), "rm".into(), self.network.clone()]);
        remove([vec!["image".into(), "rm".into()], self.images.clone()].concat());
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        if !failures.is_empty() {
            eprintln!("cleaning up Docker run {}: {failures:?}", self.run);
        }
    }
}

impl Drop for ContainerCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for ordinal in self.pods.keys().copied().collect::<Vec<_>>() {
                eprintln!(
                    "----- pod {ordinal} ({}), last lines of its log -----\n{}",
                    self.pods[&ordinal].container,
                    self.logs(ordinal, 60)
                );
            }
        }
        self.clean_up();
    }
}
