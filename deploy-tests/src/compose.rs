//! Reading `deploy/compose.yaml`: the Docker test runs its replicas with exactly the
//! compose file's `serve` arguments, so what a laptop user starts is what was tested.

use std::collections::BTreeMap;

use anyhow::{bail, Context};

use crate::tools::repo_root;

/// One compose service, as far as the tests care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub hostname: Option<String>,
    /// `serve`'s arguments (the image's entrypoint is `pageserver-controller serve`).
    pub command: Vec<String>,
    /// Published ports as written, e.g. `127.0.0.1:7001:7001`.
    pub ports: Vec<String>,
    /// Volume mounts as written, e.g. `psc-0:/var/lib/pageserver-controller`.
    pub volumes: Vec<String>,
    pub image: Option<String>,
    /// `user`, e.g. `65532:65532`.
    pub user: Option<String>,
}

/// The services of `deploy/compose.yaml`, with YAML merge keys (`<<: *replica`) applied.
pub fn services() -> anyhow::Result<BTreeMap<String, Service>> {
    let path = repo_root().join("deploy/compose.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text)
}

pub fn parse(text: &str) -> anyhow::Result<BTreeMap<String, Service>> {
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(text).context("compose.yaml is not YAML")?;
    doc.apply_merge().context("applying YAML merge keys")?;
    let services = doc
        .get("services")
        .and_then(|s| s.as_mapping())
        .context("compose.yaml has no services")?;
    let strings = |value: Option<&serde_yaml::Value>, what: &str| -> anyhow::Result<Vec<String>> {
        let Some(value) = value else {
            return Ok(Vec::new());
        };
        value
            .as_sequence()
            .with_context(|| format!("{what} is not a list"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("{what}: {v:?} is not a string"))
            })
            .collect()
    };
    let mut out = BTreeMap::new();
    for (name, service) in services {
        let name = name
            .as_str()
            .context("a service name is not a string")?
            .to_owned();
        if let Some(serde_yaml::Value::String(_)) = service.get("command") {
            bail!("service {name}: write command as a list, so no shell splitting is involved");
        }
        out.insert(
            name.clone(),
            Service {
                hostname: service
                    .get("hostname")
                    .and_then(|h| h.as_str())
                    .map(str::to_owned),
                command: strings(service.get("command"), &format!("{name}.command"))?,
                ports: strings(service.get("ports"), &format!("{name}.ports"))?,
                volumes: strings(service.get("volumes"), &format!("{name}.volumes"))?,
                image: service
                    .get("image")
                    .and_then(|i| i.as_str())
                    .map(str::to_owned),
                user: service
                    .get("user")
                    .and_then(|u| u.as_str())
                    .map(str::to_owned),
                name,
            },
        );
    }
    Ok(out)
}

/// The Compose tool: the `docker compose` plugin where it answers, else the standalone
/// `docker-compose`; a test failure saying what to install when neither is there.
pub fn tool() -> std::process::Command {
    let plugin =
        crate::tools::output(std::process::Command::new("docker").args(["compose", "version"]));
    if plugin.is_ok_and(|out| out.status.success()) {
        let mut command = std::process::Command::new("docker");
        command.arg("compose");
        return command;
    }
    std::process::Command::new(crate::tools::require(
        "docker-compose",
        "Install Docker Compose (docker compose or docker-compose).",
    ))
}

/// A Compose project started from `deploy/compose.yaml` under its own project name, with
/// environment overrides (`PSC_IMAGE`, `PSC_PORT_N`). Dropping it takes the project down
/// with its volumes and removes `images`, also when a test panics (after printing the
/// services' log tails).
pub struct Project {
    pub name: String,
    env: Vec<(String, String)>,
    pub images: Vec<String>,
}

impl Project {
    pub fn new(name: &str, env: Vec<(String, String)>) -> Project {
        Project {
            name: name.to_owned(),
            env,
            images: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = tool();
        command
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(repo_root().join("deploy/compose.yaml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    /// Runs `docker compose ARGS` for this project off the async runtime; its stdout.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || crate::tools::run(&mut command))
            .await
            .context("the compose command's thread panicked")?
    }

    /// The id of a service's container, running or stopped (the `docker compose` plugin
    /// lists only running ones without `--all`).
    pub async fn container(&self, service: &str) -> anyhow::Result<String> {
        let id = self.run(&["ps", "--all", "--quiet", service]).await?;
        let id = id.trim();
        if id.is_empty() {
            bail!("service {service} has no container");
        }
        Ok(id.to_owned())
    }

    /// A stopped service's exit code, as Docker recorded it.
    pub async fn exit_code(&self, service: &str) -> anyhow::Result<i64> {
        let container = self.container(service).await?;
        let code = crate::docker::docker(vec![
            "inspect".into(),
            "--format".into(),
            "{{.State.ExitCode}}".into(),
            container,
        ])
        .await?;
        code.trim().parse().context("an exit code")
    }

    /// The last lines of every service's log.
    pub fn logs(&self, lines: usize) -> String {
        match crate::tools::output(&mut self.command(&[
            "logs",
            "--no-color",
            "--tail",
            &lines.to_string(),
        ])) {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(no log: {e:#})"),
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- compose project {}: logs\n{}", self.name, self.logs(60));
        }
        let down = crate::tools::run(&mut self.command(&[
            "down",
            "--volumes",
            "--remove-orphans",
            "--timeout",
            "10",
        ]));
        if let Err(e) = down {
            eprintln!("taking compose project {} down: {e:#}", self.name);
        }
        for image in &self.images {
            let _ = crate::tools::output(
                std::process::Command::new("docker").args(["image", "rm", "--force", image]),
            );
        }
    }
}
