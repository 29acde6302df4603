//! Log setup: structured journald entries when stderr is connected to the journal, readable
//! lines on stderr otherwise. The filter can be changed on reload.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use super::journal::JournalLayer;

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
}

/// The STUN codec warns about every malformed message it is given; on an internet-facing
/// listener that is the attacker's pen on our journal. The TURN server counts them instead.
const QUIET: &str = "stun_types=error,turn_types=error";

fn filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(format!("{QUIET},{level}")).map_err(|e| e.to_string())
}

impl LogHandle {
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = filter(level)?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber. `RUST_LOG` wins over the profile's level when set.
pub fn init_logging(level: &str) -> LogHandle {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| filter(&l).ok())
        .or_else(|| filter(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output: Box<dyn Layer<Registry> + Send + Sync> = match JournalLayer::connect() {
        Some(journal) => Box::new(journal),
        None => Box::new(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_target(true)),
    };
    // Filter last so it applies to the one output layer.
    let _ = tracing_subscriber::registry().with(output.with_filter(filter)).try_init();
    // try_init fails only when a subscriber exists (tests); the handle is then inert.
    LogHandle { filter: handle }
}
