//! Authentication as Neon does it: EdDSA (Ed25519) JWTs with a `scope` claim.
//!
//! Replicas are given one or more public keys (a PEM file, or a directory of PEM files
//! tried in turn). A token is accepted only if it is signed with EdDSA by one of them:
//! the algorithm is fixed, so a token signed with HS256 using a public key as the secret,
//! an `alg: none` token or an RS256 token is refused. `exp` is checked when present and
//! not required (Neon's tokens often have none).
//!
//! Which scope each endpoint needs is decided in [`crate::api::auth`]. Replica-to-replica
//! Raft traffic uses its own scope, `controller_peer`, checked by [`PeerJwt`]: a
//! pageserver's or an operator's token cannot forge a vote or a log entry.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use controller_raft::swap::Swap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Neon's token scopes, spelled as Neon spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum Scope {
    #[serde(rename = "tenant")]
    #[value(name = "tenant")]
    Tenant,
    #[serde(rename = "pageserverapi")]
    #[value(name = "pageserverapi")]
    PageServerApi,
    #[serde(rename = "generations_api")]
    #[value(name = "generations_api")]
    GenerationsApi,
    #[serde(rename = "safekeeperdata")]
    #[value(name = "safekeeperdata")]
    SafekeeperData,
    #[serde(rename = "admin")]
    #[value(name = "admin")]
    Admin,
    #[serde(rename = "infra")]
    #[value(name = "infra")]
    Infra,
    #[serde(rename = "scrubber")]
    #[value(name = "scrubber")]
    Scrubber,
    #[serde(rename = "controller_peer")]
    #[value(name = "controller_peer")]
    ControllerPeer,
}

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Expiry, seconds since the Unix epoch; checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

/// Why a token was refused (never shown to the caller, who only gets Neon's message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

/// The public keys tokens are checked against. They can be re-read from their file or
/// directory while the process runs ([`JwtKeys::reload`]), so that keys rotate without a
/// restart.
pub struct JwtKeys {
    /// The file or directory the keys came from; `None` for keys given in memory.
    source: Option<PathBuf>,
    validation: Validation,
    /// Replaced whole by a reload: a token checked against the old keys is remembered
    /// only in the old set, so a key taken away takes its tokens with it.
    current: Swap<Arc<KeySet>>,
}

/// One generation of keys, with the tokens they have verified.
struct KeySet {
    /// The files the keys were read from, with their bytes: a reload that reads the same
    /// is not a change.
    files: Vec<(PathBuf, Vec<u8>)>,
    keys: Vec<DecodingKey>,
    /// Tokens whose signature one of `keys` has already checked, with their claims. A
    /// pageserver, an operator and each peer send the same token with every request,
    /// and an Ed25519 check costs more than the rest of a validate's work on a
    /// follower (about a quarter of its throughput with four checks per validate:
    /// BENCHMARKS.md). The keys of a set never change, so a signature that verified
    /// once verifies again; only `exp` depends on the time, and it is checked on every
    /// use. Keyed by the whole token, so a token differing in any byte is checked
    /// afresh; only tokens that verified are kept, so garbage cannot fill it.
    verified: std::sync::Mutex<std::collections::HashMap<Box<str>, Claims>>,
}

impl KeySet {
    fn new(files: Vec<(PathBuf, Vec<u8>)>, keys: Vec<DecodingKey>) -> KeySet {
        KeySet {
            files,
            keys,
            verified: Default::default(),
        }
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Box<str>, Claims>> {
        // The map holds only verified tokens; a panic elsewhere cannot leave it wrong.
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Most tokens remembered as verified; past it the memory is cleared and refilled
/// (holders of valid tokens are few: pageservers, operators, peers).
const VERIFIED_TOKENS: usize = 1024;

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKeys({} keys)", self.current().keys.len())
    }
}

impl JwtKeys {
    /// Loads Ed25519 public keys from a PEM file, or from every file of a directory.
    pub fn load(path: &Path) -> anyhow::Result<JwtKeys> {
        let set = parse_keys(read_key_files(path)?, path)?;
        Ok(Self::with_set(Some(path.to_owned()), set))
    }

    /// Reads the keys' file or directory again and, if what it holds changed, checks
    /// against the new keys from now on. `Ok(false)`: nothing changed. On an error (a
    /// file that is not a key, an empty directory) the keys in use stay as they were.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let Some(source) = &self.source else {
            return Ok(false);
        };
        let files = read_key_files(source)?;
        if files == self.current().files {
            return Ok(false);
        }
        self.current.set(Arc::new(parse_keys(files, source)?));
        Ok(true)
    }

    fn with_set(source: Option<PathBuf>, set: KeySet) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = true;
        validation.leeway = 5;
        validation.validate_aud = false;
        JwtKeys {
            source,
            validation,
            current: Swap::new(Arc::new(set)),
        }
    }

    fn current(&self) -> Arc<KeySet> {
        self.current.get()
    }

    /// The claims of `token` if one of the keys signed it with EdDSA and it has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify_at(token, now)
    }

    /// [`Self::verify`] at `now` (seconds since the Unix epoch) for `exp`.
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let set = self.current();
        let known = set.verified().get(token).cloned();
        if let Some(claims) = known {
            return self.unexpired(claims, now);
        }
        let mut last = None;
        for key in &set.keys {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => {
                    let claims = self.unexpired(data.claims, now)?;
                    let mut verified = set.verified();
                    if verified.len() >= VERIFIED_TOKENS {
                        verified.clear();
                    }
                    verified.insert(token.into(), claims.clone());
                    return Ok(claims);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(TokenError(
            last.map_or_else(|| "no keys".to_owned(), |e| e.to_string()),
        ))
    }

    /// `exp` as jsonwebtoken checks it: expired once it is more than the leeway behind.
    fn unexpired(&self, claims: Claims, now: u64) -> Result<Claims, TokenError> {
        match claims.exp {
            Some(exp) if exp < now.saturating_sub(self.validation.leeway) => {
                Err(TokenError("the token has expired".into()))
            }
            _ => Ok(claims),
        }
    }
}

/// The key files at `path` (the file itself, or every file of the directory) with
/// their bytes, in name order.
fn read_key_files(path: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut names = Vec::new();
    if path.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            let entry = entry?;
            // Follow symlinks: a Kubernetes Secret volume projects each key as a
            // symlink into a hidden `..data` directory. Hidden entries are that
            // machinery (or editor leftovers), never keys.
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            let target = std::fs::metadata(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?;
            if !hidden && target.is_file() {
                names.push(entry.path());
            }
        }
        names.sort();
    } else {
        names.push(path.to_owned());
    }
    names
        .into_iter()
        .map(|file| {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            Ok((file, bytes))
        })
        .collect()
}

fn parse_keys(files: Vec<(PathBuf, Vec<u8>)>, source: &Path) -> anyhow::Result<KeySet> {
    let keys = files
        .iter()
        .map(|(file, pem)| {
            DecodingKey::from_ed_pem(pem)
                .with_context(|| format!("{} is not an Ed25519 public key in PEM", file.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if keys.is_empty() {
        bail!("no public keys found in {}", source.display());
    }
    Ok(KeySet::new(files, keys))
}

/// The bearer token of a request, if it carries one.
pub fn bearer(headers: &HeaderMap) -> Option<Result<&str, TokenError>> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| TokenError("the Authorization header is not a bearer token".into())),
    )
}

/// Signs a token with an Ed25519 private key (PKCS#8 PEM).
pub fn mint(
    private_key_pem: &[u8],
    scope: Scope,
    tenant_id: Option<String>,
    expires_in: Option<Duration>,
) -> anyhow::Result<String> {
    let key = EncodingKey::from_ed_pem(private_key_pem)
        .context("the private key is not an Ed25519 key in PKCS#8 PEM")?;
    let exp = expires_in.map(|d| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |now| now.as_secs())
            + d.as_secs()
    });
    let claims = Claims {
        scope,
        tenant_id,
        exp,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &key,
    )?)
}

/// A new Ed25519 key pair as (private PKCS#8 PEM, public SPKI PEM).
pub fn generate_key_pair() -> anyhow::Result<(String, String)> {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let signing = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let private = signing
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .context("encoding the private key")?;
    let public = signing
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .context("encoding the public key")?;
    Ok((private.to_string(), public))
}

/// Where a client finds its token when no `--token-file` is given.
pub const TOKEN_ENV: &str = "PAGESERVER_CONTROLLER_TOKEN";

/// The bearer token a client sends: from `--token-file` when given, else from
/// [`TOKEN_ENV`], else none. Never from a command-line value, which `ps` would show.
pub fn client_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        return read_token_file(path).map(Some);
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty()))
}

/// Reads a token from a file, trimming whitespace; refuses an empty one.
pub fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

/// This replica's `controller_peer` token, read from its file, and re-read by
/// [`PeerToken::reload`] so that it rotates without a restart. Cheap to clone; every
/// clone sees a reload.
#[derive(Clone)]
pub struct PeerToken {
    file: PathBuf,
    current: Arc<Swap<Arc<Presented>>>,
}

/// A peer token and the header that carries it.
struct Presented {
    token: String,
    header: HeaderValue,
}

impl Presented {
    fn new(token: String) -> anyhow::Result<Presented> {
        let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the peer token is not a valid header value")?;
        header.set_sensitive(true);
        Ok(Presented { token, header })
    }
}

impl std::fmt::Debug for PeerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        write!(f, "PeerToken({}: <redacted>)", self.file.display())
    }
}

impl PeerToken {
    /// Reads the token in `file`, which must be a `controller_peer` token that `keys`
    /// verify: a replica whose own token its peers would refuse is better stopped at
    /// start than left out of every election.
    pub fn load(file: &Path, keys: &JwtKeys) -> anyhow::Result<PeerToken> {
        let token = read_token_file(file)?;
        check_peer_token(&token, keys)?;
        Ok(PeerToken {
            file: file.to_owned(),
            current: Arc::new(Swap::new(Arc::new(Presented::new(token)?))),
        })
    }

    /// The token, as presented now.
    pub fn token(&self) -> String {
        self.current().token.clone()
    }

    /// `Authorization: Bearer <token>`, marked sensitive.
    pub fn header(&self) -> HeaderValue {
        self.current().header.clone()
    }

    /// Reads the file again and presents the token it now holds, if it changed and is
    /// a `controller_peer` token that `keys` verify. `Ok(false)`: unchanged. On an
    /// error the token in use stays. An unchanged token is checked too: keys taken
    /// away under it mean the peers, which hold the same keys, refuse it as well.
    pub fn reload(&self, keys: &JwtKeys) -> anyhow::Result<bool> {
        let token = read_token_file(&self.file)?;
        check_peer_token(&token, keys)?;
        if token == self.current().token {
            return Ok(false);
        }
        self.current.set(Arc::new(Presented::new(token)?));
        Ok(true)
    }

    fn current(&self) -> Arc<Presented> {
        self.current.get()
    }
}

fn check_peer_token(token: &str, keys: &JwtKeys) -> anyhow::Result<()> {
    let claims = keys.verify(token).map_err(|e| {
        anyhow::anyhow!("the peer token does not verify against --auth-public-key: {e}")
    })?;
    if claims.scope != Scope::ControllerPeer {
        bail!(
            "the peer token has scope {:?}; it needs controller_peer",
            claims.scope
        );
    }
    Ok(())
}

/// Replica-to-replica credentials: presents this replica's `controller_peer` token and
/// accepts only `controller_peer` tokens (an admin token is refused here on purpose).
pub struct PeerJwt {
    token: PeerToken,
    keys: Arc<JwtKeys>,
}

impl PeerJwt {
    pub fn new(token: PeerToken, keys: Arc<JwtKeys>) -> PeerJwt {
        PeerJwt { token, keys }
    }
}

impl controller_raft::transport::PeerAuth for PeerJwt {
    fn outgoing(&self) -> Option<(HeaderName, HeaderValue)> {
        Some((axum::http::header::AUTHORIZATION, self.token.header()))
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let token = match bearer(headers) {
            None => return Err("missing peer token".into()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(token)) => token,
        };
        match self.keys.verify(token) {
            Ok(claims) if claims.scope == Scope::ControllerPeer => Ok(()),
            Ok(claims) => Err(format!(
                "a {:?} token cannot speak for a replica",
                claims.scope
            )),
            Err(_) => Err("invalid peer token".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (String, JwtKeys) {
        let (private, public) = generate_key_pair().unwrap();
        let key = DecodingKey::from_ed_pem(public.as_bytes()).unwrap();
        let keys = JwtKeys::with_set(None, KeySet::new(Vec::new(), vec![key]));
        (private, keys)
    }

    /// The layout of a Kubernetes Secret volume: keys are symlinks to `..data/KEY`, and
    /// `..data` links to a hidden, timestamped directory.
    #[test]
    fn a_key_directory_laid_out_like_a_secret_volume_loads() {
        let (private, public) = generate_key_pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stamped = dir.path().join("..2026_01_01_00_00_00.000000001");
        std::fs::create_dir(&stamped).unwrap();
        std::fs::write(stamped.join("auth_public_key.pem"), &public).unwrap();
        std::os::unix::fs::symlink(&stamped, dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink(
            "..data/auth_public_key.pem",
            dir.path().join("auth_public_key.pem"),
        )
        .unwrap();
        let keys = JwtKeys::load(dir.path()).unwrap();
        let token = mint(private.as_bytes(), Scope::Admin, None, None).unwrap();
        assert_eq!(keys.verify(&token).unwrap().scope, Scope::Admin);
    }

    /// Rotation as an operator does it: add the new key, move tokens over, take the old
    /// key away. A directory that does not load leaves the keys in use as they were.
    #[test]
    fn reloaded_keys_take_effect_and_a_bad_directory_keeps_the_old_ones() {
        let (old_private, old_public) = generate_key_pair().unwrap();
        let (new_private, new_public) = generate_key_pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.pem"), &old_public).unwrap();
        let keys = JwtKeys::load(dir.path()).unwrap();
        let old = mint(old_private.as_bytes(), Scope::Admin, None, None).unwrap();
        let new = mint(new_private.as_bytes(), Scope::Admin, None, None).unwrap();
        assert!(keys.verify(&old).is_ok());
        assert!(keys.verify(&new).is_err());
        assert!(!keys.reload().unwrap(), "nothing changed");

        std::fs::write(dir.path().join("b.pem"), &new_public).unwrap();
        assert!(keys.reload().unwrap());
        assert!(keys.verify(&old).is_ok());
        assert!(keys.verify(&new).is_ok());

        // A garbled file: refused, both keys still in use.
        std::fs::write(dir.path().join("c.pem"), "not a key").unwrap();
        let error = format!("{:#}", keys.reload().unwrap_err());
        assert!(error.contains("c.pem"), "{error}");
        assert!(keys.verify(&old).is_ok());
        assert!(keys.verify(&new).is_ok());
        std::fs::remove_file(dir.path().join("c.pem")).unwrap();

        // The old key goes, and the token it signed goes with it although it was
        // remembered as verified.
        std::fs::remove_file(dir.path().join("a.pem")).unwrap();
        assert!(keys.reload().unwrap());
        assert!(keys.verify(&old).is_err());
        assert!(keys.verify(&new).is_ok());

        // An empty directory is a mistake, not "accept nothing".
        std::fs::remove_file(dir.path().join("b.pem")).unwrap();
        assert!(keys.reload().is_err());
        assert!(keys.verify(&new).is_ok());
    }

    #[test]
    fn a_reloaded_peer_token_is_presented_only_if_it_is_a_peer_token_the_keys_verify() {
        let (private, public) = generate_key_pair().unwrap();
        let (stranger, _) = generate_key_pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.pem"), &public).unwrap();
        let keys = JwtKeys::load(&dir.path().join("key.pem")).unwrap();
        let file = dir.path().join("peer.token");
        let first = mint(private.as_bytes(), Scope::ControllerPeer, None, None).unwrap();
        std::fs::write(&file, &first).unwrap();
        let token = PeerToken::load(&file, &keys).unwrap();
        let shared = token.clone();
        assert_eq!(shared.token(), first);
        assert!(!token.reload(&keys).unwrap());

        let refused = [
            mint(private.as_bytes(), Scope::Admin, None, None).unwrap(),
            mint(stranger.as_bytes(), Scope::ControllerPeer, None, None).unwrap(),
            String::new(),
        ];
        for bad in refused {
            std::fs::write(&file, &bad).unwrap();
            assert!(token.reload(&keys).is_err(), "{bad:?} was taken");
            assert_eq!(shared.token(), first);
        }

        let second = mint(
            private.as_bytes(),
            Scope::ControllerPeer,
            None,
            Some(Duration::from_secs(3600)),
        )
        .unwrap();
        std::fs::write(&file, format!("{second}\n")).unwrap();
        assert!(token.reload(&keys).unwrap());
        assert_eq!(shared.token(), second, "every clone presents the new token");
        assert_eq!(
            shared.header().to_str().unwrap(),
            format!("Bearer {second}")
        );

        // The key goes while the token stays: said, although the file did not change.
        let (_, other_public) = generate_key_pair().unwrap();
        std::fs::write(dir.path().join("key.pem"), &other_public).unwrap();
        assert!(keys.reload().unwrap());
        assert!(token.reload(&keys).is_err());
    }

    #[test]
    fn minted_tokens_verify_with_their_scope() {
        let (private, keys) = keys();
        let token = mint(private.as_bytes(), Scope::GenerationsApi, None, None).unwrap();
        assert_eq!(keys.verify(&token).unwrap().scope, Scope::GenerationsApi);
        let claims: serde_json::Value =
            serde_json::from_slice(&base64_url_decode(token.split('.').nth(1).unwrap())).unwrap();
        assert_eq!(claims, serde_json::json!({"scope": "generations_api"}));
    }

    #[test]
    fn expired_tokens_and_other_keys_are_refused() {
        let (private, keys) = keys();
        let (other_private, _) = generate_key_pair().unwrap();
        let past = Claims {
            scope: Scope::Admin,
            tenant_id: None,
            exp: Some(1),
        };
        let key = EncodingKey::from_ed_pem(private.as_bytes()).unwrap();
        let expired = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &past, &key).unwrap();
        assert!(keys.verify(&expired).is_err());
        let foreign = mint(other_private.as_bytes(), Scope::Admin, None, None).unwrap();
        assert!(keys.verify(&foreign).is_err());
        let fresh = mint(
            private.as_bytes(),
            Scope::Admin,
            None,
            Some(Duration::from_secs(60)),
        )
        .unwrap();
        assert!(keys.verify(&fresh).is_ok());
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_changed_one_is_checked_again() {
        let (private, keys) = keys();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = mint(
            private.as_bytes(),
            Scope::Admin,
            None,
            Some(Duration::from_secs(60)),
        )
        .unwrap();
        assert_eq!(keys.verify_at(&token, now).unwrap().scope, Scope::Admin);
        assert_eq!(keys.current().verified().len(), 1);
        // Remembered, and still refused once past its expiry and the leeway.
        assert!(keys.verify_at(&token, now + 60 + 5).is_ok());
        assert!(keys.verify_at(&token, now + 60 + 7).is_err());
        // Any byte changed (here in the signature) is a different token: checked, refused.
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(keys.verify_at(&forged, now).is_err());
        // Refused tokens are not remembered; the memory stays bounded.
        assert_eq!(keys.current().verified().len(), 1);
        for i in 0..VERIFIED_TOKENS + 3 {
            let tenant = Some(format!("{i:032x}"));
            let token = mint(private.as_bytes(), Scope::Tenant, tenant, None).unwrap();
            assert!(keys.verify_at(&token, now).is_ok());
            assert!(keys.current().verified().len() <= VERIFIED_TOKENS);
        }
    }

    #[test]
    fn unknown_scopes_are_refused() {
        let (private, keys) = keys();
        let key = EncodingKey::from_ed_pem(private.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &serde_json::json!({"scope": "superuser"}),
            &key,
        )
        .unwrap();
        assert!(keys.verify(&token).is_err());
    }

    fn base64_url_decode(s: &str) -> Vec<u8> {
        // Tiny decoder for the test: URL-safe alphabet, no padding.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes() {
            let v = alphabet.iter().position(|a| *a == c).unwrap() as u32;
            bits = (bits << 6) | v;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        out
    }
}
