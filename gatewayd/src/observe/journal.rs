//! A tracing layer that writes each event to the systemd journal with its fields as journal
//! fields (`CALL_ID=...`, `DN=...`), through systemd-journal-logger.

use std::fmt::Write as _;

use log::Log;
use systemd_journal_logger::JournalLog;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

pub(crate) struct JournalLayer {
    journal: JournalLog,
}

impl JournalLayer {
    /// The journal layer when stderr goes to the journal (as under systemd), else `None`.
    pub fn connect() -> Option<Self> {
        if !systemd_journal_logger::connected_to_journal() {
            return None;
        }
        let journal = JournalLog::new().ok()?.with_syslog_identifier("gatewayd".into());
        Some(Self { journal })
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.pairs.push((field.name().to_ascii_uppercase(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.pairs.push((field.name().to_ascii_uppercase(), value.to_owned()));
        }
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => log::Level::Error,
            Level::WARN => log::Level::Warn,
            Level::INFO => log::Level::Info,
            Level::DEBUG => log::Level::Debug,
            Level::TRACE => log::Level::Trace,
        };
        // The readable line keeps the fields too, for `journalctl` without `-o verbose`.
        let mut line = fields.message.clone();
        for (k, v) in &fields.pairs {
            let _ = write!(line, " {}={v}", k.to_ascii_lowercase());
        }
        let kv: Vec<(&str, &str)> = fields.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.journal.log(
            &log::Record::builder()
                .args(format_args!("{line}"))
                .level(level)
                .target(meta.target())
                .module_path(meta.module_path())
                .file(meta.file())
                .line(meta.line())
                .key_values(&kv)
                .build(),
        );
    }
}
