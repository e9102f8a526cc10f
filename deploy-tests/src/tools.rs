//! Finding and running the programs the deploy tests drive (kubectl, docker, the Python
//! linters, promtool and Prometheus). A missing program is a test failure that says what
//! to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context};

/// The repository root (the workspace's root package).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy-tests sits in the repository root")
        .to_owned()
}

/// The full path of `program` on `PATH`; panics with `how_to_install` when it is not
/// there, so that a machine without it fails the test instead of skipping it.
pub fn require(program: &str, how_to_install: &str) -> PathBuf {
    on_path(program).unwrap_or_else(|| {
        panic!(
            "`{program}` is not on PATH; the deploy tests need it. {how_to_install} \
                 (or skip these tests: cargo test --workspace --exclude deploy-tests)"
        )
    })
}

/// The full path of `program` if it is on `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A Python tool pinned in `.ci/deploy-tools.txt`: from `PATH`, else from the virtual
/// environment `target/deploy-tools`, which is created and filled from PyPI on first use
/// (so `cargo test --workspace` works on a fresh machine that has `python3`).
pub fn python_tool(program: &str) -> PathBuf {
    let venv = repo_root().join("target/deploy-tools/bin").join(program);
    if let Some(found) = on_path(program) {
        return found;
    }
    if !is_executable(&venv) {
        if let Err(e) = install_python_tools() {
            panic!("installing the pinned Python tools failed: {e:#}");
        }
    }
    if is_executable(&venv) {
        return venv;
    }
    require(
        program,
        "Install the pinned Python tools: python3 -m venv target/deploy-tools && \
         target/deploy-tools/bin/pip install -r .ci/deploy-tools.txt",
    )
}

/// Creates `target/deploy-tools` and installs `.ci/deploy-tools.txt` into it, once per
/// test process (tests of one binary share the result).
fn install_python_tools() -> anyhow::Result<()> {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let root = repo_root();
            let venv = root.join("target/deploy-tools");
            eprintln!(
                "[deploy tests] installing the pinned Python tools into {} (once)",
                venv.display()
            );
            let python = require(
                "python3",
                "Install Python 3 (Debian: python3, python3-venv).",
            );
            let steps: [(&Path, Vec<std::ffi::OsString>); 2] = [
                (
                    &python,
                    vec!["-m".into(), "venv".into(), venv.clone().into()],
                ),
                (
                    &venv.join("bin/pip"),
                    vec![
                        "install".into(),
                        "--quiet".into(),
                        "--disable-pip-version-check".into(),
                        "-r".into(),
                        root.join(".ci/deploy-tools.txt").into(),
                    ],
                ),
            ];
            for (program, args) in steps {
                let out = Command::new(program)
                    .args(&args)
                    .output()
                    .map_err(|e| format!("running {}: {e}", program.display()))?;
                if !out.status.success() {
                    return Err(format!(
                        "{} {:?} failed: {}",
                        program.display(),
                        args,
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            Ok(())
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Runs `command`; its output whatever the exit status.
pub fn output(command: &mut Command) -> anyhow::Result<Output> {
    command
        .output()
        .with_context(|| format!("running {command:?}"))
}

/// Runs `command` and returns its stdout; an error with its stderr if it failed.
pub fn run(command: &mut Command) -> anyhow::Result<String> {
    let out = output(command)?;
    if !out.status.success() {
        bail!(
            "{command:?} failed with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{command:?} printed non-UTF-8"))
}

/// Prometheus' `promtool` (it checks and unit-tests `deploy/prometheus/alerts.yaml`): from
/// `PATH`, else `target/deploy-tools/promtool`, which is unpacked on first use from
/// Debian's `prometheus` package (`apt-get download`, so nothing is installed or started).
pub fn promtool() -> PathBuf {
    prometheus_package_tool("promtool")
}

/// The Prometheus server (it scrapes a live cluster and evaluates the alert rules on
/// it), found or unpacked as [`promtool`] is.
pub fn prometheus() -> PathBuf {
    prometheus_package_tool("prometheus")
}

/// The programs taken from Debian's `prometheus` package.
const PROMETHEUS_TOOLS: [&str; 2] = ["promtool", "prometheus"];

fn prometheus_package_tool(name: &str) -> PathBuf {
    debug_assert!(PROMETHEUS_TOOLS.contains(&name));
    if let Some(found) = on_path(name) {
        return found;
    }
    let unpacked = repo_root().join("target/deploy-tools").join(name);
    if !is_executable(&unpacked) {
        if let Err(e) = unpack_prometheus_package() {
            panic!(
                "`{name}` is not on PATH and unpacking it from Debian's prometheus package \
                 failed: {e:#}. Install it (Debian: prometheus) or put it on PATH."
            );
        }
    }
    unpacked
}

/// Downloads Debian's `prometheus` package into a temporary directory and copies its
/// programs into `target/deploy-tools`; once per test process.
fn unpack_prometheus_package() -> anyhow::Result<()> {
    static UNPACKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    UNPACKED
        .get_or_init(|| {
            let attempt = || -> anyhow::Result<()> {
                let work = download_dir()?;
                eprintln!(
                    "[deploy tests] unpacking promtool and prometheus from Debian's prometheus \
                     package (once)"
                );
                let download = || {
                    output(
                        Command::new(require("apt-get", "Prometheus comes from Debian's apt."))
                            .args(["download", "-qq", "prometheus"])
                            .current_dir(&work),
                    )
                };
                let mut out = download()?;
                if !out.status.success() {
                    // A fresh machine may have no package lists yet.
                    run(Command::new("apt-get").args(["update", "-qq"]))?;
                    out = download()?;
                }
                if !out.status.success() {
                    bail!(
                        "apt-get download prometheus failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                let deb = std::fs::read_dir(&work)?
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .find(|p| p.extension().is_some_and(|e| e == "deb"))
                    .context("apt-get download left no .deb")?;
                let unpacked = work.join("unpacked");
                run(Command::new(require(
                    "dpkg-deb",
                    "Prometheus comes from a Debian package.",
                ))
                .arg("-x")
                .arg(&deb)
                .arg(&unpacked))?;
                let tools = repo_root().join("target/deploy-tools");
                std::fs::create_dir_all(&tools)?;
                for name in PROMETHEUS_TOOLS {
                    // Copied under another name, then renamed: a copy cut short must not
                    // pass for the tool next time.
                    let to = tools.join(name);
                    let partial = to.with_extension(format!("partial-{}", std::process::id()));
                    std::fs::copy(unpacked.join("usr/bin").join(name), &partial)
                        .with_context(|| format!("the package holds no usr/bin/{name}"))?;
                    std::fs::rename(&partial, &to)?;
                }
                std::fs::remove_dir_all(&work)?;
                Ok(())
            };
            attempt().map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// A fresh directory under `target/` (apt's downloader must be able to write there).
fn download_dir() -> anyhow::Result<PathBuf> {
    let dir = repo_root().join(format!("target/prometheus-download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The documents of a YAML stream (kustomize's output, a manifest), empty ones dropped.
pub fn yaml_documents(yaml: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    use serde::Deserialize;
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(document).context("parsing YAML")?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}
