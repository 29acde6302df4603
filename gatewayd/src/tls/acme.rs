//! The ACME client (RFC 8555, through instant-acme) for `tls.source = "acme"`: keeps an account
//! in the state directory, orders a certificate for `tls.acme.domains` when `renewal` says it
//! is due, answers http-01 by leaving key authorizations where the HTTP redirect listener
//! serves them (or TLS-ALPN-01 by leaving validation certificates for the HTTPS listener,
//! `alpn_challenge`), and installs the result as `<state>/acme/web.{crt,key}`. The web side (and
//! TURN over TLS, which follows it) then rereads the certificate: new handshakes get it, open
//! connections and calls keep theirs.
//!
//! It talks to the CA only; it never serves anything itself and never logs or exposes the
//! account key (`account.json` is written owner-only).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{Account, AccountCredentials, AuthorizationStatus, ExternalAccountKey, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy};
use tokio::sync::watch;

use super::alpn_challenge::{validation_certificate, TLS_ALPN01_DIR};
use super::renewal::{self, Validity};
use crate::profile::{Acme, AcmeChallenge, LoadedProfile, TlsSource};

/// Where the ACME state lives, under the state directory.
pub const DIR: &str = "acme";
/// Key authorizations for pending http-01 challenges, one file per token (the redirect
/// listener serves them).
pub const HTTP01_DIR: &str = "acme/http-01";
const ACCOUNT_FILE: &str = "account.json";
/// How long one order may take, from creation to the certificate, before it counts as failed.
const ORDER_DEADLINE: Duration = Duration::from_secs(300);

/// What the client did last, for `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct AcmeStatus {
    /// True until a certificate from the CA is in service (a self-signed stand-in is served).
    pub stand_in: AtomicBool,
    pub issued: AtomicU64,
    pub failures: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// Why an order did not end in a certificate.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("ACME: cannot use {path}: {source}")]
    State { path: String, source: std::io::Error },
    #[error("ACME: the CA offers no {0} challenge for {1}")]
    NoChallenge(&'static str, String),
    #[error("ACME: the order ended {0:?}")]
    Order(OrderStatus),
    #[error("ACME: authorization for {0} is {1:?}")]
    Authorization(String, AuthorizationStatus),
    #[error("ACME: the CA's certificate does not match the key: {0}")]
    Certificate(#[from] super::PairError),
    #[error("ACME: the order took longer than {0:?}")]
    Timeout(Duration),
}

/// Runs for the daemon's life: whenever the running profile asks for ACME, keeps a certificate
/// from the CA in service, calling `installed` after each new one.
pub async fn run(mut profile: watch::Receiver<Arc<LoadedProfile>>, state_dir: PathBuf, status: Arc<AcmeStatus>, installed: Arc<dyn Fn() + Send + Sync>) {
    let mut failures = 0u32;
    let mut last_attempt = None;
    // The retry a failure planned (and logged), kept so the wait is the one announced.
    let mut planned_retry = None;
    loop {
        let loaded = profile.borrow_and_update().clone();
        let acme = match (&loaded.profile.tls.source, &loaded.profile.tls.acme) {
            (TlsSource::Acme, Some(acme)) => acme.clone(),
            _ => {
                status.stand_in.store(false, Ordering::Relaxed);
                if profile.changed().await.is_err() {
                    return;
                }
                continue;
            }
        };
        let current = current_validity(&state_dir);
        status.stand_in.store(current.is_none(), Ordering::Relaxed);
        let at = planned_retry.unwrap_or_else(|| renewal::next_attempt(unix_now(), current, failures, last_attempt, rand::random::<f64>()));
        let wait = Duration::from_secs(at.saturating_sub(unix_now()).max(0) as u64);
        tokio::select! {
            changed = profile.changed() => {
                if changed.is_err() { return }
                continue;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        last_attempt = Some(unix_now());
        planned_retry = None;
        let attempt = tokio::time::timeout(ORDER_DEADLINE, obtain(&acme, &loaded, &state_dir)).await.unwrap_or(Err(AcmeError::Timeout(ORDER_DEADLINE)));
        match attempt {
            Ok(validity) => {
                failures = 0;
                status.issued.fetch_add(1, Ordering::Relaxed);
                status.stand_in.store(false, Ordering::Relaxed);
                *status.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(domains = ?acme.domains, not_after = validity.not_after, "ACME: certificate issued and installed");
                installed();
            }
            Err(e) => {
                failures += 1;
                status.failures.fetch_add(1, Ordering::Relaxed);
                let next = renewal::next_attempt(unix_now(), current, failures, last_attempt, rand::random::<f64>());
                planned_retry = Some(next);
                tracing::warn!(error = %e, failures, retry_in_s = next - unix_now(), "ACME: no certificate this time; the one in service stays");
                *status.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            }
        }
    }
}

/// Orders, validates and installs one certificate.
async fn obtain(acme: &Acme, loaded: &LoadedProfile, state_dir: &Path) -> Result<Validity, AcmeError> {
    let dir = state_dir.join(DIR);
    for sub in [HTTP01_DIR, TLS_ALPN01_DIR] {
        std::fs::create_dir_all(state_dir.join(sub)).map_err(|source| AcmeError::State { path: state_dir.join(sub).display().to_string(), source })?;
    }
    let account = account(acme, loaded, &dir).await?;
    let identifiers: Vec<Identifier> = acme.domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut tokens = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => return Err(AcmeError::Authorization(authz.identifier().to_string(), other)),
            }
            let name = authz.identifier().to_string();
            let (kind, label) = match acme.challenge {
                AcmeChallenge::Http01 => (ChallengeType::Http01, "http-01"),
                AcmeChallenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
            };
            let mut challenge = authz.challenge(kind).ok_or(AcmeError::NoChallenge(label, name.clone()))?;
            let key_authorization = challenge.key_authorization();
            let (path, content) = match acme.challenge {
                AcmeChallenge::Http01 => (state_dir.join(HTTP01_DIR).join(&challenge.token), key_authorization.as_str().as_bytes().to_vec()),
                AcmeChallenge::TlsAlpn01 => {
                    let pem = validation_certificate(&name, key_authorization.digest().as_ref()).map_err(|e| AcmeError::State { path: name.clone(), source: std::io::Error::other(e) })?;
                    (state_dir.join(TLS_ALPN01_DIR).join(format!("{name}.pem")), pem.into_bytes())
                }
            };
            crate::system::write_private_file(&path, &content).map_err(|source| AcmeError::State { path: path.display().to_string(), source })?;
            tokens.push(path);
            challenge.set_ready().await?;
        }
        match order.poll_ready(&RetryPolicy::default()).await? {
            OrderStatus::Ready => {}
            other => return Err(AcmeError::Order(other)),
        }
        let key = order.finalize().await?;
        let chain = order.poll_certificate(&RetryPolicy::default()).await?;
        Ok((chain, key))
    }
    .await;
    for t in tokens {
        let _ = std::fs::remove_file(t);
    }
    let (chain, key) = result?;
    super::check_pair(chain.as_bytes(), key.as_bytes())?;
    install(&dir, chain.as_bytes(), key.as_bytes())?;
    current_validity(state_dir).ok_or(AcmeError::State { path: dir.join("web.crt").display().to_string(), source: std::io::Error::other("unreadable after install") })
}

/// The account from `account.json`, or a new one registered and saved there.
async fn account(acme: &Acme, loaded: &LoadedProfile, dir: &Path) -> Result<Account, AcmeError> {
    let builder = match &acme.directory_ca {
        Some(ca) => Account::builder_with_root(loaded.resolve(ca))?,
        None => Account::builder()?,
    };
    let path = dir.join(ACCOUNT_FILE);
    if let Ok(saved) = std::fs::read(&path) {
        if let Ok(credentials) = serde_json::from_slice::<AccountCredentials>(&saved) {
            return Ok(builder.from_credentials(credentials).await?);
        }
        tracing::warn!(path = %path.display(), "ACME: the saved account is unreadable; registering a new one");
    }
    let contact = [acme.contact.as_str()];
    let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
    let binding = match &acme.external_account {
        Some(eab) => {
            let key = eab.hmac_key(|p| loaded.resolve(p)).map_err(|e| AcmeError::State { path: eab.hmac_key_file.display().to_string(), source: std::io::Error::other(e) })?;
            Some(ExternalAccountKey::new(eab.key_id.clone(), &key))
        }
        None => None,
    };
    let (account, credentials) = builder.create(&new, acme.directory.clone(), binding.as_ref()).await?;
    let json = serde_json::to_vec(&credentials).map_err(|e| AcmeError::State { path: path.display().to_string(), source: std::io::Error::other(e) })?;
    crate::system::write_private_file(&path, &json).map_err(|source| AcmeError::State { path: path.display().to_string(), source })?;
    tracing::info!(directory = %acme.directory, "ACME: account registered");
    Ok(account)
}

/// Replaces `web.{crt,key}` so a reader never sees a new certificate with an old key: each
/// file is written beside and renamed, key first (the web side checks the pair and keeps the
/// old one on a mismatch, so even the moment between the two renames serves the old pair).
fn install(dir: &Path, chain: &[u8], key: &[u8]) -> Result<(), AcmeError> {
    for (name, bytes) in [("web.key", key), ("web.crt", chain)] {
        let tmp = dir.join(format!(".{name}.new"));
        let path = dir.join(name);
        crate::system::write_private_file(&tmp, bytes).map_err(|source| AcmeError::State { path: tmp.display().to_string(), source })?;
        std::fs::rename(&tmp, &path).map_err(|source| AcmeError::State { path: path.display().to_string(), source })?;
    }
    Ok(())
}

/// The validity of the CA's certificate in service, if there is one that matches its key.
pub fn current_validity(state_dir: &Path) -> Option<Validity> {
    let dir = state_dir.join(DIR);
    let chain = std::fs::read(dir.join("web.crt")).ok()?;
    let key = std::fs::read(dir.join("web.key")).ok()?;
    super::check_pair(&chain, &key).ok()?;
    Validity::of_leaf(&chain)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
