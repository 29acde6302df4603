//! The daemon's composition root: loads the profile, starts each subsystem with its part,
//! reloads on SIGHUP (a bad profile is refused and the running one stays), stops on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::call;
use crate::firewall::Firewall;
use crate::guard::{BanService, BanStore};
use crate::observe::{self, LogHandle};
use crate::profile::{self, LoadedProfile};
use crate::system::last_good::{self, Choice, LastGoodStore};
use crate::system::{self, Notifier};

/// How `gatewayd run` was invoked.
pub struct RunOptions {
    pub profile: PathBuf,
    pub state_dir: Option<PathBuf>,
}

/// Runs until SIGTERM or SIGINT. Errors before readiness end the process with a message.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    // Handlers first: a SIGHUP that arrives while listeners are still being bound must not
    // take the default action (terminate).
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let loaded = match profile::load(&opts.profile) {
        Ok(loaded) => loaded,
        Err(diagnostics) => invalid_at_start(&opts, diagnostics)?,
    };
    // One crypto library for TLS, DTLS and SRTP: aws-lc-rs, the media stack's. A library that
    // builds its own TLS client (the ACME client's HTTPS) takes the process default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let log = observe::init_logging(&loaded.profile.observe.log_level);
    let notifier = Notifier;
    match system::limits::raise_open_files() {
        Ok(files) if files.now < system::limits::WANTED_OPEN_FILES => {
            tracing::warn!(open_files = files.now, wanted = system::limits::WANTED_OPEN_FILES, "the open-file limit leaves room for few connections; raise the hard limit (LimitNOFILE= in the unit)")
        }
        Ok(files) => tracing::info!(open_files = files.now, was = files.before, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    if loaded.profile.site.lab_mode {
        tracing::warn!("site.lab_mode is on: plaintext passwords and self-signed certificates are accepted; never expose this gateway to the internet");
    }
    let state_dir = system::state_dir(opts.state_dir.as_deref(), &loaded.dir, loaded.profile.site.state_dir.as_deref());
    std::fs::create_dir_all(&state_dir).with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let last_good = LastGoodStore::in_dir(&state_dir);
    let loaded = if loaded.fallback.is_some() { loaded } else { choose_profile(&opts, loaded, &last_good) };
    if let Some(f) = &loaded.fallback {
        tracing::error!(
            profile = %opts.profile.display(), failed_sha256 = %f.failed_sha256, failed_starts = f.failed_starts, last_good_sha256 = %loaded.sha256,
            "the profile failed to reach READY {} times: running the LAST GOOD profile; fix the profile and restart or reload",
            f.failed_starts
        );
    }

    let firewall = Arc::new(Firewall::new());
    let bans = Arc::new(BanService::new(&loaded.profile, firewall.clone(), Some(BanStore::in_dir(&state_dir))));
    firewall.apply(&loaded.profile, &bans.firewall_bans()).await.context("cannot apply the firewall")?;
    tokio::spawn(bans.clone().run_housekeeping());

    // A pair shares its bans over the management side (a reload does not move the sync port).
    crate::ha::start(&loaded, bans.clone()).await.context("cannot start the HA ban sync")?;
    let (profile_tx, profile_rx) = watch::channel(Arc::new(loaded));
    // Someone flushing the ruleset must not open the box: the table comes back.
    tokio::spawn(bans.clone().watch_firewall(profile_rx.clone()));
    let admin_addr = profile_rx.borrow().profile.observe.admin;
    let call_gauges = Arc::new(observe::metrics::CallGauges::default());
    let (calls_query_tx, calls_query_rx) = mpsc::channel(4);
    let (admin_local, admin) = observe::admin::bind(admin_addr, observe::admin::Serves::Admin, profile_rx.clone(), bans.clone(), call_gauges.clone(), Some(calls_query_tx))
        .await
        .with_context(|| format!("cannot listen on observe.admin {admin_addr}"))?;
    tokio::spawn(admin);
    // A separate metrics listener when the profile asks for one.
    if let Some(metrics_addr) = profile_rx.borrow().profile.observe.metrics.filter(|m| *m != admin_addr) {
        let (_, serve) = observe::admin::bind(metrics_addr, observe::admin::Serves::MetricsOnly, profile_rx.clone(), bans.clone(), call_gauges.clone(), None)
            .await
            .with_context(|| format!("cannot listen on observe.metrics {metrics_addr}"))?;
        tokio::spawn(serve);
    }

    let media_settings = call::media_bridge::media_config(&profile_rx.borrow(), &state_dir);
    let media = Arc::new(crate::media::MediaEngine::start(media_settings).context("cannot start the media bridge")?);
    tracing::info!(fingerprint = %media.fingerprint(), "media bridge started");

    let hep = observe::hep::HepCapture::start(profile_rx.clone());
    let _ = call_gauges.hep.set(hep.clone());
    let listen = profile_rx.borrow().profile.sip.listen.clone();
    let (sip_sender, sip_inbound) = call::internal::bind(&listen, call::driver::EVENT_QUEUE, hep.clone())
        .await
        .with_context(|| "cannot listen on sip.listen")?;
    let (conn_tx, conn_rx) = mpsc::channel(call::driver::EVENT_QUEUE);
    let (failure_tx, mut failure_rx) = mpsc::channel::<crate::guard::Report>(1024);
    let web_failures = failure_tx.clone();
    let turn_failures = failure_tx.clone();
    let secret = call::driver::digest_secret(&state_dir).context("cannot keep the digest nonce key")?;
    let (media_notes_tx, media_notes) = mpsc::channel(call::driver::EVENT_QUEUE);
    tokio::spawn(call::driver::run(call::driver::CallTask {
        events: conn_rx,
        internal: sip_inbound,
        sender: sip_sender,
        profile: profile_rx.clone(),
        secret,
        failures: failure_tx,
        closures: bans.subscribe_closures(),
        gauges: call_gauges.clone(),
        media: call::media_bridge::BridgeMedia::new(media.clone(), media_notes_tx),
        media_notes,
        queries: calls_query_rx,
        hep,
        state_dir: state_dir.clone(),
    }));
    let guard = bans.clone();
    tokio::spawn(async move {
        while let Some(f) = failure_rx.recv().await {
            guard.observe(f).await;
        }
    });
    let web = crate::web::start(&state_dir, profile_rx.clone(), conn_tx, web_failures).await.context("cannot start the web side")?;
    let bound = web.bound();
    let acme = Arc::new(crate::tls::acme::AcmeStatus::default());
    let _ = call_gauges.acme.set(acme.clone());
    tokio::spawn(crate::tls::acme::run(profile_rx.clone(), state_dir.clone(), acme, web.certificate_refresher()));
    let _ = call_gauges.web.set(web.settings_watch());
    let turn = crate::turn::start(profile_rx.clone(), web.settings_watch(), turn_failures).await.context("cannot start TURN")?;
    if let Some(turn) = turn {
        web.share_with_turn(Arc::new(turn.clone()));
        let _ = call_gauges.turn.set(turn);
    }

    let watchdog = notifier.watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(std::time::Duration::from_secs(3600)));
    let mut trim_tick = tokio::time::interval(system::memory::TRIM_INTERVAL);

    let sha = profile_rx.borrow().sha256.clone();
    tracing::info!(profile = %opts.profile.display(), profile_sha256 = %sha, admin = %admin_local, https = ?bound.https, state_dir = %state_dir.display(), "gatewayd ready");
    let fallback = profile_rx.borrow().fallback.clone();
    match fallback {
        None => {
            remember_good(&last_good, &profile_rx.borrow());
            notifier.ready(&format!("running profile {}", &sha[..12]));
        }
        Some(f) => notifier.ready(&format!(
            "running the LAST GOOD profile {}: profile {} failed to start {} times",
            &sha[..12],
            &f.failed_sha256[..12],
            f.failed_starts
        )),
    }

    loop {
        tokio::select! {
            _ = hangup.recv() => reload(&opts, &profile_tx, &log, &notifier, &bans, &call_gauges, &last_good).await,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = watchdog_tick.tick(), if watchdog.is_some() => notifier.watchdog(),
            _ = trim_tick.tick() => system::memory::give_back(),
        }
    }
    notifier.stopping();
    bans.flush();
    tracing::info!("gatewayd stopping");
    Ok(())
}

/// Re-reads the profile; a valid one replaces the running one, an invalid one is refused.
async fn reload(
    opts: &RunOptions,
    tx: &watch::Sender<Arc<LoadedProfile>>,
    log: &LogHandle,
    notifier: &Notifier,
    bans: &BanService,
    gauges: &observe::metrics::CallGauges,
    last_good: &LastGoodStore,
) {
    notifier.reloading();
    let old = tx.borrow().clone();
    match profile::load(&opts.profile) {
        Err(diagnostics) => {
            for d in &diagnostics.0 {
                tracing::error!("{d}");
            }
            tracing::error!(problems = diagnostics.0.len(), profile_sha256 = %old.sha256, "reload refused: the profile is invalid; still running the previous profile");
            gauges.reload(false);
            notifier.ready(&format!("reload refused; running profile {}", &old.sha256[..12]));
        }
        Ok(new) => {
            let changes = profile::diff(&old.profile, &new.profile);
            for c in &changes {
                tracing::info!(section = ?c.section, keys = ?c.keys, "profile section changed");
            }
            if old.profile.observe.log_level != new.profile.observe.log_level {
                if let Err(e) = log.set_level(&new.profile.observe.log_level) {
                    tracing::warn!(error = %e, "cannot apply observe.log_level");
                }
            }
            bans.reconfigure(&new.profile);
            // Under the ban lock, so a ban made during the swap is never lost.
            if let Err(e) = bans.apply_firewall(&new.profile).await {
                tracing::error!(error = %e, "the new firewall ruleset was not applied; the previous one stays");
            }
            let sha = new.sha256.clone();
            remember_good(last_good, &new);
            tx.send_replace(Arc::new(new));
            gauges.reload(true);
            tracing::info!(profile_sha256 = %sha, changed = changes.len(), "profile reloaded");
            notifier.ready(&format!("running profile {}", &sha[..12]));
        }
    }
}

/// The operator's profile, or the last good one when the operator's has failed to reach READY
/// too many times (`system::last_good`). Relative paths resolve as for the operator's file.
fn choose_profile(opts: &RunOptions, loaded: LoadedProfile, store: &LastGoodStore) -> LoadedProfile {
    let (record, good_text, mut choice) = start_choice(store, &loaded.sha256);
    // The last good profile is parsed only when it is wanted, not on every start.
    if let (Choice::LastGood { failed_sha256, failed_starts }, Some(text)) = (&choice, good_text.as_deref()) {
        match load_last_good(opts, text, failed_sha256, *failed_starts) {
            Ok(good) => return good,
            Err(d) => {
                tracing::warn!(problems = %d, "the last good profile no longer validates; it cannot be fallen back to");
                choice = last_good::choose(record.as_ref(), &loaded.sha256, None);
            }
        }
    }
    if let Choice::Current { record } = choice {
        if let Err(e) = store.set_record(&record) {
            tracing::warn!(error = %e, "cannot record this start of the profile");
        }
    }
    loaded
}

/// The operator's profile does not load at start. One that validated when the box booted can
/// still fail here (a file the daemon's user may not read), so this counts as a start of that
/// profile that did not reach READY, and after too many of them the last good one runs. Without
/// a loaded profile the state directory is the flag's or systemd's StateDirectory= (a profile's
/// own `site.state_dir` is unknown here). Errors with the diagnostics when nothing can run.
fn invalid_at_start(opts: &RunOptions, diagnostics: profile::Diagnostics) -> anyhow::Result<LoadedProfile> {
    let invalid = || anyhow::anyhow!("{diagnostics}");
    let Ok(text) = std::fs::read_to_string(&opts.profile) else { return Err(invalid()) };
    let profile_dir = opts.profile.parent().unwrap_or(std::path::Path::new("."));
    let store = LastGoodStore::in_dir(&system::state_dir(opts.state_dir.as_deref(), profile_dir, None));
    let (_, good_text, choice) = start_choice(&store, &profile::text_sha256(&text));
    match (choice, good_text) {
        (Choice::LastGood { failed_sha256, failed_starts }, Some(good)) => {
            load_last_good(opts, &good, &failed_sha256, failed_starts).map_err(|_| invalid())
        }
        (Choice::Current { record }, _) => {
            // Best effort: a start that cannot be recorded only delays the fallback.
            let _ = store.set_record(&record);
            Err(invalid())
        }
        // `choose` falls back only to a last good profile that exists.
        (Choice::LastGood { .. }, None) => Err(invalid()),
    }
}

/// The store's record of earlier starts, the last good profile's text, and what a start of the
/// profile with `sha256` runs according to them.
fn start_choice(store: &LastGoodStore, sha256: &str) -> (Option<last_good::StartRecord>, Option<String>, Choice) {
    let record = store.record();
    let good_text = store.last_good();
    let good_sha = good_text.as_deref().map(profile::text_sha256);
    let choice = last_good::choose(record.as_ref(), sha256, good_sha.as_deref());
    (record, good_text, choice)
}

/// The last good profile's text, loaded as if it were the operator's file and marked as the
/// fallback from the profile that failed.
fn load_last_good(opts: &RunOptions, text: &str, failed_sha256: &str, failed_starts: u32) -> Result<LoadedProfile, profile::Diagnostics> {
    let mut good = profile::load_str(&opts.profile, text, std::env::vars())?;
    good.fallback = Some(profile::ProfileFallback { failed_sha256: failed_sha256.to_owned(), failed_starts });
    Ok(good)
}

/// A profile in service (READY, or a reload applied) becomes the last good one: the file's text,
/// if it is still the text that was loaded.
fn remember_good(store: &LastGoodStore, loaded: &LoadedProfile) {
    let Ok(text) = std::fs::read_to_string(&loaded.path) else { return };
    if profile::text_sha256(&text) != loaded.sha256 {
        return;
    }
    if let Err(e) = store.reached_ready(&text) {
        tracing::warn!(error = %e, "cannot keep the last good profile");
    }
}
