//! The calls in progress, kept in the state directory (`calls-in-progress.json`) so that a
//! crash (`kill -9`, a power cut of the process, the OOM killer) does not lose their records
//! silently: the next start writes a record for each with cause `gateway-restart`, ended at the
//! last moment the file shows them alive. Media cannot survive the process, so the calls did
//! end then; the record says so instead of the call vanishing from the CDRs.
//!
//! The file is rewritten (beside, then renamed) only when the set of calls or their answered
//! state changes, and looked at once a second: no write per packet or per message. It owns
//! only that file; it never touches call state.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::active::CallSummary;
use super::control::CallRecord;

/// The record cause of a call the previous run of the daemon left in progress.
pub const RESTART_CAUSE: &str = "gateway-restart";
const FILE: &str = "calls-in-progress.json";

/// What was last written: each call (by number) and when it was answered.
pub type Written = Vec<(u64, Option<u64>)>;

pub struct InProgress {
    path: PathBuf,
    written: Written,
}

impl InProgress {
    pub fn in_dir(state_dir: &Path) -> InProgress {
        InProgress { path: state_dir.join(FILE), written: Vec::new() }
    }

    /// The records of the calls the previous run left in progress; the file is removed, so
    /// each is recorded once.
    pub fn recover(&mut self) -> Vec<CallRecord> {
        let Ok(text) = std::fs::read(&self.path) else { return Vec::new() };
        let last_alive_ms = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as u64);
        let calls: Vec<CallSummary> = match serde_json::from_slice(&text) {
            Ok(calls) => calls,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "the calls left in progress cannot be read; their records are lost");
                Vec::new()
            }
        };
        let _ = std::fs::remove_file(&self.path);
        records_of(calls, last_alive_ms)
    }

    /// Keeps the file in step with the calls, writing only on a change; an empty set removes
    /// it. `now` is each call and its answer time, sorted by call (cheap to compare each
    /// second); `calls` is asked for the summaries only when they must be written.
    pub fn update(&mut self, now: Written, calls: impl FnOnce() -> Vec<CallSummary>) {
        if now == self.written {
            return;
        }
        let calls = calls();
        let result = if calls.is_empty() {
            std::fs::remove_file(&self.path).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        } else {
            let tmp = self.path.with_extension("json.new");
            serde_json::to_vec(&calls).map_err(std::io::Error::other).and_then(|bytes| crate::system::write_private_file(&tmp, &bytes)).and_then(|()| std::fs::rename(&tmp, &self.path))
        };
        match result {
            Ok(()) => self.written = now,
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "cannot keep the list of calls in progress"),
        }
    }

    /// Called while calls run, so the file's time says when they were last known alive.
    pub fn touch(&self) {
        if !self.written.is_empty() {
            let _ = std::fs::File::options().append(true).open(&self.path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        }
    }
}

fn records_of(calls: Vec<CallSummary>, last_alive_ms: u64) -> Vec<CallRecord> {
    calls.into_iter().map(|summary| CallRecord { ended_ms: last_alive_ms.max(summary.started_ms), summary, cause: RESTART_CAUSE.to_owned(), status: 0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::control::Direction;
    use crate::call::media_port::CallRef;

    fn update(live: &mut InProgress, calls: &[CallSummary]) {
        live.update(calls.iter().map(|c| (c.call.0, c.answered_ms)).collect(), || calls.to_vec());
    }

    fn call(n: u64, answered: Option<u64>) -> CallSummary {
        CallSummary {
            call: CallRef(n),
            dn: format!("50{n:02}"),
            direction: Direction::Inbound,
            peer: "+4930123".into(),
            agent_call_id: Some(format!("a{n}")),
            upstream_call_id: Some(format!("u{n}")),
            started_ms: 1_000,
            answered_ms: answered,
            upstream_ids: Default::default(),
            user_agent: Some("JsSIP".into()),
            media: None,
        }
    }

    #[test]
    fn calls_left_in_progress_come_back_as_restart_records_once() {
        let dir = std::env::temp_dir().join(format!("in-progress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut live = InProgress::in_dir(&dir);
        update(&mut live, &[call(1, Some(2_000)), call(2, None)]);
        assert!(dir.join(FILE).exists());
        // The process dies here; the next one finds them.
        let mut next = InProgress::in_dir(&dir);
        let records = next.recover();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.cause == RESTART_CAUSE && r.status == 0 && r.ended_ms >= r.summary.started_ms));
        assert_eq!(records[0].summary.upstream_call_id.as_deref(), Some("u1"));
        assert!(next.recover().is_empty(), "recorded once");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_file_changes_only_with_the_calls_and_goes_when_none_are_left() {
        let dir = std::env::temp_dir().join(format!("in-progress-w-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut live = InProgress::in_dir(&dir);
        update(&mut live, &[call(1, None)]);
        let first = std::fs::read(dir.join(FILE)).unwrap();
        let mut same = call(1, None);
        same.media = Some(serde_json::json!({"changed": true}));
        update(&mut live, &[same]);
        assert_eq!(std::fs::read(dir.join(FILE)).unwrap(), first, "media figures alone do not rewrite it");
        update(&mut live, &[call(1, Some(5))]);
        assert_ne!(std::fs::read(dir.join(FILE)).unwrap(), first, "an answer does");
        update(&mut live, &[]);
        assert!(!dir.join(FILE).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
