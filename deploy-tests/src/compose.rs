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
