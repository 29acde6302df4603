//! What a media worker must not miss when its command queue is full: changes to calls that
//! exist — an operation (a re-offer's or an answer's SDP, a direction), a close, a routing
//! change of the shared port. The queue stays bounded and fails fast for what may be refused
//! (a new call is answered 503, a status asked again); changes go instead to this table, keyed
//! by call, which the worker drains after the queue.
//!
//! Why a table and not a bigger or a blocking queue: an entry is one call's latest state, so
//! the table is bounded by the calls, not by how fast changes come — at most one operation per
//! call (the handles await each reply before the next), one close, and the latest route, which
//! replaces an older one (a Remove supersedes the ufrag it removes, a new ufrag an older one).
//! A blocking send would stall call control's tasks, or another media worker broadcasting a
//! route, behind one slow worker.
//!
//! Order: once a call has an entry, its later changes join the entry instead of the queue, and
//! the worker drains the queue before the table, so one call's changes are handled in the order
//! they were made.

use std::collections::HashMap;

use super::commands::Command;

#[derive(Default)]
struct Entry {
    route: Option<Command>,
    op: Option<Command>,
    close: Option<Command>,
}

/// Changes held for a worker whose queue was full.
#[derive(Default)]
pub struct Held {
    calls: HashMap<u64, Entry>,
}

impl Held {
    /// Whether `call` has changes held: its next ones must join them.
    pub fn holds(&self, call: u64) -> bool {
        self.calls.contains_key(&call)
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Keeps a change to a call. Gives the command back when it is not one (those fail fast)
    /// or when an operation of the call is already held (one at a time per call).
    pub fn hold(&mut self, cmd: Command) -> Result<(), Command> {
        let Some(call) = cmd.call() else { return Err(cmd) };
        let entry = self.calls.entry(call).or_default();
        match cmd {
            Command::Route(_) => entry.route = Some(cmd),
            Command::Op { .. } if entry.op.is_some() => return Err(cmd),
            Command::Op { .. } => entry.op = Some(cmd),
            Command::Close { .. } => {
                entry.close.get_or_insert(cmd);
            }
            _ => return Err(cmd),
        }
        Ok(())
    }

    /// Everything held, each call's operation before its close.
    pub fn take(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        for (_, e) in self.calls.drain() {
            out.extend(e.route);
            out.extend(e.op);
            out.extend(e.close);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::commands::Op;
    use super::super::routes::{Owner, RouteUpdate};
    use super::*;
    use tokio::sync::oneshot;

    fn ufrag(call: u64, u: &str) -> Command {
        Command::Route(RouteUpdate::Ufrag { owner: Owner { shard: 1, call }, ufrag: u.into() })
    }

    fn op(call: u64) -> Command {
        Command::Op { id: call, op: Op::InternalAcceptAnswer("v=0".into()), reply: oneshot::channel().0 }
    }

    fn describe(c: &Command) -> String {
        match c {
            Command::Route(RouteUpdate::Ufrag { owner, ufrag }) => format!("ufrag {} {ufrag}", owner.call),
            Command::Route(RouteUpdate::Remove { call }) => format!("remove {call}"),
            Command::Op { id, .. } => format!("op {id}"),
            Command::Close { id, .. } => format!("close {id}"),
            _ => "other".into(),
        }
    }

    #[test]
    fn a_call_keeps_its_latest_route_and_its_operation_before_its_close() {
        let mut h = Held::default();
        h.hold(ufrag(7, "a")).ok().unwrap();
        h.hold(ufrag(7, "b")).ok().unwrap();
        h.hold(op(3)).ok().unwrap();
        h.hold(Command::Close { id: 3, reply: None }).ok().unwrap();
        h.hold(Command::Route(RouteUpdate::Remove { call: 9 })).ok().unwrap();
        assert!(h.holds(7) && h.holds(3) && !h.holds(4));
        let mut got: Vec<String> = h.take().iter().map(describe).collect();
        got.sort();
        assert_eq!(got, ["close 3", "op 3", "remove 9", "ufrag 7 b"]);
        let taken: Vec<String> = {
            h.hold(op(3)).ok().unwrap();
            h.hold(Command::Close { id: 3, reply: None }).ok().unwrap();
            h.take().iter().map(describe).collect()
        };
        assert_eq!(taken, ["op 3", "close 3"], "a call's operation is handled before its close");
        assert!(h.is_empty());
    }

    #[test]
    fn a_remove_supersedes_the_route_it_removes() {
        let mut h = Held::default();
        h.hold(ufrag(7, "a")).ok().unwrap();
        h.hold(Command::Route(RouteUpdate::Remove { call: 7 })).ok().unwrap();
        assert_eq!(h.take().iter().map(describe).collect::<Vec<_>>(), ["remove 7"]);
    }

    #[test]
    fn one_operation_per_call_and_nothing_but_changes_to_calls() {
        let mut h = Held::default();
        h.hold(op(3)).ok().unwrap();
        assert!(h.hold(op(3)).is_err(), "a second operation of the same call is refused");
        assert!(h.hold(Command::Status { reply: oneshot::channel().0 }).is_err());
        assert!(h.hold(Command::Shutdown).is_err());
        assert_eq!(h.take().len(), 1);
    }
}
