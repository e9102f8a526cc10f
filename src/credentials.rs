//! Credentials that change while a replica runs: the public keys tokens are checked
//! against, this replica's peer token, the certificate it serves HTTPS with, and the CA
//! it checks its peers' certificates against.
//!
//! They live in files that someone else replaces: a Kubernetes Secret volume swaps its
//! files when the Secret changes, and cert-manager renews a certificate weeks before it
//! expires. Restarting every replica for each of those costs elections and an
//! operator's attention, so a replica reads them again every `--reload-interval-ms` and
//! on SIGHUP. What fails to load (a key that is not a key, a certificate without its
//! key) leaves the credential in use as it was, and says so once in the log and in
//! `psc_credential_reload_failing` until the files are right again: a half-read
//! credential is never used. When the certificate chain served expires is exported too
//! (`psc_tls_not_after_timestamp_seconds`): a renewal that never arrives is silent until
//! the day it breaks every connection, so an alert watches the date. (Not the CA file's
//! dates: rustls takes trust anchors without their validity, so an expired CA there
//! breaks nothing by itself; what breaks is the peers' own chains, which each of them
//! reports.)
//!
//! A new CA replaces the pooled peer client: requests under way finish on the old one,
//! and every peer is reached over a new connection once. What a reload cannot change is
//! the flags themselves.
//!
//! SIGHUP is listened for from the first moment of `serve` ([`Hangups`]): a pod that
//! waits for its peers before Raft starts, or a replica opening a large log, would
//! otherwise be ended by it (the signal's default action) when an operator reloads every
//! replica at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;
use controller_raft::transport::PeerHttp;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use crate::auth::{JwtKeys, PeerToken};
use crate::metrics::Metrics;
use crate::server::{peer_client_trusting, read_ca};

/// A certificate and its key, and the bytes they were last loaded from.
pub struct TlsFiles {
    config: RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
    loaded: (Vec<u8>, Vec<u8>),
    /// When the chain served now expires (Unix seconds), if it could be read.
    not_after: Option<i64>,
}

impl TlsFiles {
    pub async fn load(cert: &Path, key: &Path) -> anyhow::Result<TlsFiles> {
        let loaded = read_pair(cert, key).await?;
        let config = RustlsConfig::from_pem(loaded.0.clone(), loaded.1.clone())
            .await
            .with_context(|| describe(cert, key))?;
        Ok(TlsFiles {
            config,
            not_after: expiry(cert, &loaded.0),
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded,
        })
    }

    /// What the listener serves with; a reload changes it for new connections.
    pub fn config(&self) -> RustlsConfig {
        self.config.clone()
    }

    /// Serves the pair the files hold now, if it changed and makes a valid
    /// certificate and key. `Ok(false)`: unchanged.
    async fn reload(&mut self) -> anyhow::Result<bool> {
        let read = read_pair(&self.cert, &self.key).await?;
        if read == self.loaded {
            return Ok(false);
        }
        self.config
            .reload_from_pem(read.0.clone(), read.1.clone())
            .await
            .with_context(|| describe(&self.cert, &self.key))?;
        self.not_after = expiry(&self.cert, &read.0);
        self.loaded = read;
        Ok(true)
    }
}

/// The CA (PEM, possibly a bundle) peers' certificates are checked against, and the
/// peer client that trusts it.
pub struct CaFile {
    path: PathBuf,
    loaded: Vec<u8>,
    http: PeerHttp,
}

impl CaFile {
    /// `loaded`: the bytes `http`'s client was built from.
    pub fn new(path: PathBuf, loaded: Vec<u8>, http: PeerHttp) -> CaFile {
        CaFile { path, loaded, http }
    }

    /// Trusts what the file holds now, if it changed and holds certificates.
    /// `Ok(false)`: unchanged.
    async fn reload(&mut self) -> anyhow::Result<bool> {
        let read = read_ca(&self.path)?;
        if read == self.loaded {
            return Ok(false);
        }
        let client = peer_client_trusting(Some((&self.path, &read)))?;
        self.http.replace(client);
        self.loaded = read;
        Ok(true)
    }
}

/// When a served chain stops being valid, in Unix seconds: when the earliest-expiring
/// certificate of the file expires (a client checks every one but the root it trusts; a root bundled
/// in the file counts too, which can only make the alert early). Only for metrics:
/// rustls decides what is served, so a file it accepts whose dates cannot be read here
/// (logged) has no expiry series, and the expiry alerts cannot fire for it.
fn expiry(path: &Path, pem: &[u8]) -> Option<i64> {
    match not_after(pem) {
        Ok(Some(seconds)) => Some(seconds),
        Ok(None) => {
            tracing::warn!(file = %path.display(), "no certificate found to read the expiry of");
            None
        }
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot read a certificate's expiry");
            None
        }
    }
}

fn not_after(pem: &[u8]) -> anyhow::Result<Option<i64>> {
    let mut earliest: Option<i64> = None;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.context("reading PEM")?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let (_, certificate) = x509_parser::parse_x509_certificate(&block.contents)
            .map_err(|e| anyhow::anyhow!("parsing a certificate: {e}"))?;
        let seconds = certificate.validity().not_after.timestamp();
        earliest = Some(earliest.map_or(seconds, |e| e.min(seconds)));
    }
    Ok(earliest)
}

async fn read_pair(cert: &Path, key: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let read = |path: &Path| {
        let path = path.to_owned();
        async move {
            tokio::fs::read(&path)
                .await
                .with_context(|| format!("reading {}", path.display()))
        }
    };
    Ok((read(cert).await?, read(key).await?))
}

fn describe(cert: &Path, key: &Path) -> String {
    format!(
        "loading the TLS certificate {} and key {}",
        cert.display(),
        key.display()
    )
}

/// SIGHUP for the whole process, read by one [`Reloader`] at a time: the waiting room's
/// while a pod decides how to start, then the replica's.
///
/// Once tokio listens for a signal it keeps its handler for the life of the process, so
/// after [`Hangups::listen`] a SIGHUP never ends the process, even between two readers;
/// one that arrives while no reloader reads waits in the stream and triggers a reload as
/// soon as one does.
#[derive(Clone, Default)]
pub struct Hangups(Arc<tokio::sync::Mutex<Option<Signal>>>);

impl Hangups {
    /// Starts listening now (`Default` listens only when a reloader first reads).
    pub fn listen() -> Hangups {
        Hangups(Arc::new(tokio::sync::Mutex::new(listen_for_hangup())))
    }

    /// The stream, for as long as the guard lives.
    async fn take_owned(self) -> OwnedMutexGuard<Option<Signal>> {
        let mut guard = self.0.lock_owned().await;
        if guard.is_none() {
            *guard = listen_for_hangup();
        }
        guard
    }
}

fn listen_for_hangup() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; credentials reload only on the timer");
            None
        }
    }
}

/// Reads a replica's credentials again, on a timer and on SIGHUP.
pub struct Reloader {
    keys: Option<Arc<JwtKeys>>,
    peer_token: Option<PeerToken>,
    tls: Option<TlsFiles>,
    ca: Option<CaFile>,
    /// `None` before the replica serves (its metrics do not exist yet).
    metrics: Option<Arc<Metrics>>,
    /// The last error of each credential whose reload fails, so that it is reported
    /// once rather than every interval.
    failing: BTreeMap<Credential, String>,
    /// Read whether or not there is anything to reload, so that an operator who sends
    /// SIGHUP to every replica is told what happened.
    hangups: Hangups,
}

/// What a reload reads, as named in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Credential {
    AuthPublicKey,
    PeerToken,
    TlsCertificate,
    TlsCa,
}

impl Credential {
    pub const ALL: [Credential; 4] = [
        Credential::AuthPublicKey,
        Credential::PeerToken,
        Credential::TlsCertificate,
        Credential::TlsCa,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Credential::AuthPublicKey => "auth_public_key",
            Credential::PeerToken => "peer_token",
            Credential::TlsCertificate => "tls_certificate",
            Credential::TlsCa => "tls_ca",
        }
    }
}

impl Reloader {
    pub fn new(
        keys: Option<Arc<JwtKeys>>,
        peer_token: Option<PeerToken>,
        tls: Option<TlsFiles>,
        ca: Option<CaFile>,
        metrics: Option<Arc<Metrics>>,
        hangups: Hangups,
    ) -> Reloader {
        Reloader {
            keys,
            peer_token,
            tls,
            ca,
            metrics,
            failing: BTreeMap::new(),
            hangups,
        }
    }

    /// The certificate the listener serves with, if it serves HTTPS.
    pub fn tls_config(&self) -> Option<RustlsConfig> {
        self.tls.as_ref().map(TlsFiles::config)
    }

    /// Whether there is anything to reload.
    fn has_work(&self) -> bool {
        self.keys.is_some() || self.peer_token.is_some() || self.tls.is_some() || self.ca.is_some()
    }

    /// Reloads every `every` (never if `None`, or with nothing to reload) and on each
    /// SIGHUP, until `stop`.
    pub async fn run(mut self, every: Option<Duration>, stop: CancellationToken) {
        let mut guard = tokio::select! {
            () = stop.cancelled() => return,
            guard = self.hangups.clone().take_owned() => guard,
        };
        let hangup = &mut *guard;
        self.publish_expiry();
        let every = every.filter(|_| self.has_work());
        let mut ticks = every.map(|every| {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = async {
                    match ticks.as_mut() {
                        Some(ticks) => {
                            ticks.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                } => {}
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(hangup) => hangup.recv().await,
                        None => std::future::pending().await,
                    }
                } => if self.has_work() {
                    tracing::info!("SIGHUP received: reloading credentials");
                } else {
                    tracing::info!("SIGHUP received: no keys, peer token or TLS files to reload");
                },
            }
            self.reload().await;
            self.publish_expiry();
        }
    }

    /// Exports when the served chain expires.
    fn publish_expiry(&self) {
        if let (Some(metrics), Some(tls)) = (&self.metrics, &self.tls) {
            metrics.tls_not_after(Credential::TlsCertificate, tls.not_after);
        }
    }

    /// Reads every credential once. The keys come first, so that a peer token signed by
    /// a key added in the same change verifies.
    pub async fn reload(&mut self) {
        if let Some(keys) = self.keys.clone() {
            let peer_token = self.peer_token.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let keys_outcome = keys.reload();
                let token_outcome = peer_token.map(|token| token.reload(&keys));
                (keys_outcome, token_outcome)
            })
            .await;
            match outcome {
                Ok((keys, token)) => {
                    self.report(Credential::AuthPublicKey, keys);
                    if let Some(token) = token {
                        self.report(Credential::PeerToken, token);
                    }
                }
                Err(e) => tracing::error!(error = %e, "reloading the keys failed"),
            }
        }
        if let Some(tls) = self.tls.as_mut() {
            let outcome = tls.reload().await;
            self.report(Credential::TlsCertificate, outcome);
        }
        if let Some(ca) = self.ca.as_mut() {
            let outcome = ca.reload().await;
            self.report(Credential::TlsCa, outcome);
        }
    }

    fn report(&mut self, what: Credential, outcome: anyhow::Result<bool>) {
        match outcome {
            Ok(changed) => {
                if changed {
                    tracing::info!(credential = what.name(), "credential reloaded");
                    if let Some(metrics) = &self.metrics {
                        metrics.credential_reloaded(what);
                    }
                }
                if self.failing.remove(&what).is_some() {
                    if !changed {
                        tracing::info!(
                            credential = what.name(),
                            "credential files are back to the ones in use"
                        );
                    }
                    self.set_failing(what, false);
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                if self.failing.get(&what) != Some(&error) {
                    tracing::error!(credential = what.name(), %error,
                        "cannot reload a credential; the one loaded before stays in use");
                    self.set_failing(what, true);
                    self.failing.insert(what, error);
                }
            }
        }
    }

    fn set_failing(&self, what: Credential, failing: bool) {
        if let Some(metrics) = &self.metrics {
            metrics.credential_failing(what, failing);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate (PEM) that expires at midnight UTC of the day given.
    fn certificate(year: i32, month: u8, day: u8) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_served_chain_expires_with_its_first_certificate_to_expire() {
        // 2031-05-06 and 2029-01-02, 00:00 UTC.
        let (later, sooner) = (1_935_792_000, 1_862_006_400);
        let leaf_first = format!("{}{}", certificate(2031, 5, 6), certificate(2029, 1, 2));
        assert_eq!(not_after(leaf_first.as_bytes()).unwrap(), Some(sooner));
        let leaf_last = format!("{}{}", certificate(2029, 1, 2), certificate(2031, 5, 6));
        assert_eq!(not_after(leaf_last.as_bytes()).unwrap(), Some(sooner));
        assert_eq!(
            not_after(certificate(2031, 5, 6).as_bytes()).unwrap(),
            Some(later)
        );
        // A key beside the certificate is skipped; a file without one has no expiry.
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let with_key = format!("{key}{}", certificate(2029, 1, 2));
        assert_eq!(not_after(with_key.as_bytes()).unwrap(), Some(sooner));
        assert_eq!(not_after(key.as_bytes()).unwrap(), None);
        let garbled = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(not_after(garbled.as_bytes()).is_err());
        assert_eq!(expiry(Path::new("x.pem"), garbled.as_bytes()), None);
    }
}
