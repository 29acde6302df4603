//! The RFC 3261 transaction layer (section 17) as one sans-IO state machine for all
//! transactions: INVITE and non-INVITE, client and server, over unreliable (UDP) and reliable
//! (TCP, TLS, WebSocket) transports, with the RFC 6026 "Accepted" state for INVITE.
//!
//! The driver feeds it received messages (`receive`), requests and responses from the TU
//! (`send_request`, `send_response`), transport failures and the time, and drains `Output`s:
//! messages to send and events for the TU. `poll_timeout` says when `handle_timeout` is due.
//! The number of live transactions is bounded; beyond it `TxError::Overloaded` (answer 503).
//!
//! Responses of server transactions go back to where the request came from (the connection
//! for stream transports, the source address for UDP: symmetric response, RFC 3581 style).
//! Over UDP the 2xx to an INVITE is retransmitted here until its ACK (RFC 3261 section
//! 13.3.1.4 gives that job to the UAS core; doing it here keeps every timer in one place).

mod build;
mod state;

pub use build::build_cancel;
pub use state::{Kind, State};

use crate::sip::registrar::ConnId;
use build::{AckKey, TxKey};
use rsip::{Request, Response, SipMessage};
use state::{Action, Timer, Transaction};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A transaction as the TU and driver refer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    /// Reliable transports need no retransmissions (RFC 3261 section 17.1.1.2 and 17.1.2.2).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// Where a message goes or came from: a connection the driver owns, or a datagram address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    Conn(ConnId),
    Addr(SocketAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: Transport,
    pub destination: Destination,
}

/// RFC 3261 timer base values (section 17.1.1.1 and table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxConfig {
    pub timers: TimerConfig,
    /// Limit on live transactions; beyond it new ones get `TxError::Overloaded` (503).
    pub max_transactions: usize,
    /// Limit on live transactions over one connection (`Destination::Conn`), so one
    /// connection cannot take the whole table; datagram peers share `max_transactions` only.
    pub max_per_connection: usize,
}

impl Default for TxConfig {
    fn default() -> Self {
        TxConfig {
            timers: TimerConfig::default(),
            max_transactions: 10_000,
            max_per_connection: 100,
        }
    }
}

/// Something for the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `message` to `target`. `tx` is the transaction it belongs to, for
    /// `transport_failed`.
    Send {
        tx: TxId,
        target: Target,
        message: SipMessage,
    },
    Event(TxEvent),
}

/// What the TU is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// A new request: a server transaction `tx` now exists and awaits the TU's response.
    /// For CANCEL, `cancels` is the INVITE server transaction it matches (if none, answer
    /// 481); the TU answers the CANCEL itself and sends 487 on the INVITE.
    Request {
        tx: TxId,
        request: Request,
        source: Target,
        cancels: Option<TxId>,
    },
    /// An ACK outside any transaction (the ACK for a 2xx is end-to-end); `acked` is the
    /// INVITE server transaction whose 2xx it acknowledges, when known.
    Ack {
        request: Request,
        source: Target,
        acked: Option<TxId>,
    },
    /// A response for client transaction `tx` (2xx retransmissions included, to be ACKed).
    Response { tx: TxId, response: Response },
    /// A response that matches no client transaction.
    StrayResponse { response: Response, source: Target },
    /// Client transaction `tx` timed out (timer B or F); `response` is the synthesised 408.
    Timeout { tx: TxId, response: Response },
    /// INVITE server transaction `tx` got no ACK for its final response (timer H or L):
    /// after a 2xx the TU should end the dialog with BYE.
    AckTimeout { tx: TxId },
    /// Sending for `tx` failed; the transaction is gone (already when this event is read, so
    /// `request(tx)` answers `None`). RFC 3261 section 8.1.3.1 has a client TU treat this as a
    /// 503: for a client transaction `response` is that synthesised 503.
    TransportError { tx: TxId, response: Option<Response> },
    /// Transaction `tx` ended; the TU can drop what it kept for it.
    Terminated { tx: TxId },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("too many transactions (limit {limit})")]
    Overloaded { limit: usize },
    #[error("message has no usable Via")]
    MissingVia,
    #[error("request has no RFC 3261 branch")]
    MissingBranch,
    #[error("a transaction with this branch already exists")]
    Duplicate,
    #[error("no such transaction")]
    NoSuchTransaction,
    #[error("response not allowed in the transaction's state")]
    InvalidState,
    #[error("ACK is not sent through a client transaction")]
    AckNotTransactional,
}

impl TxError {
    /// The status code a driver answers a received request with when `receive` fails.
    pub fn status_code(&self) -> u16 {
        match self {
            TxError::Overloaded { .. } => 503,
            TxError::MissingVia | TxError::MissingBranch => 400,
            _ => 500,
        }
    }
}

struct Entry {
    tx: Transaction,
    key: TxKey,
    target: Target,
    ack_key: Option<AckKey>,
    /// Timers running for this transaction (a handful at most).
    armed: Vec<(Timer, Instant)>,
}

/// All live transactions and their timers.
pub struct TransactionLayer {
    config: TxConfig,
    next_id: u64,
    entries: HashMap<TxId, Entry>,
    index: HashMap<TxKey, TxId>,
    acks: HashMap<AckKey, TxId>,
    per_conn: HashMap<ConnId, usize>,
    timers: BTreeSet<(Instant, TxId, Timer)>,
    outputs: VecDeque<Output>,
}

impl TransactionLayer {
    pub fn new(config: TxConfig) -> Self {
        TransactionLayer {
            config,
            next_id: 1,
            entries: HashMap::new(),
            index: HashMap::new(),
            acks: HashMap::new(),
            per_conn: HashMap::new(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Kind and state of a live transaction.
    /// Changes the live-transaction limit (a reload); transactions already over it run out.
    pub fn set_max_transactions(&mut self, limit: usize) {
        self.config.max_transactions = limit;
    }

    pub fn state(&self, tx: TxId) -> Option<(Kind, State)> {
        self.entries.get(&tx).map(|e| (e.tx.kind, e.tx.state))
    }

    /// The request that created a live transaction.
    pub fn request(&self, tx: TxId) -> Option<&Request> {
        self.entries.get(&tx).map(|e| &e.tx.request)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _, _)| *at)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let t = self.config.timers;
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.armed.retain(|(armed, _)| *armed != timer);
            let actions = entry.tx.on_timer(timer, &t);
            self.apply(id, actions, now);
        }
    }

    fn new_id(&mut self) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        id
    }

    fn check_capacity(&self, target: &Target) -> Result<(), TxError> {
        if self.entries.len() >= self.config.max_transactions {
            return Err(TxError::Overloaded {
                limit: self.config.max_transactions,
            });
        }
        if let Destination::Conn(conn) = target.destination {
            if self.per_conn.get(&conn).copied().unwrap_or(0) >= self.config.max_per_connection {
                return Err(TxError::Overloaded {
                    limit: self.config.max_per_connection,
                });
            }
        }
        Ok(())
    }

    /// A connection closed: its transactions fail now (`TransportError`) instead of timing
    /// out later.
    pub fn connection_closed(&mut self, conn: ConnId, now: Instant) {
        let gone: Vec<TxId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.target.destination == Destination::Conn(conn))
            .map(|(id, _)| *id)
            .collect();
        for tx in gone {
            self.transport_failed(tx, now);
        }
    }

    /// Starts a client transaction sending `request` (which must carry a fresh branch) to
    /// `target`. ACK is not sent this way: the ACK for a 2xx is the TU's to send directly.
    pub fn send_request(
        &mut self,
        request: Request,
        target: Target,
        now: Instant,
    ) -> Result<TxId, TxError> {
        self.send_request_within(request, target, now, None)
    }

    /// As [`send_request`](Self::send_request); a request that has no response at all after
    /// `within` (when given) times out then (Timer B or F shortened, as a proxy's fr_timer), so
    /// the TU can try elsewhere. For an INVITE a provisional response stops the clock, as it
    /// stops Timer B.
    pub fn send_request_within(
        &mut self,
        request: Request,
        target: Target,
        now: Instant,
        within: Option<std::time::Duration>,
    ) -> Result<TxId, TxError> {
        if request.method == rsip::Method::Ack {
            return Err(TxError::AckNotTransactional);
        }
        let key = build::client_key(&request)?;
        if self.index.contains_key(&key) {
            return Err(TxError::Duplicate);
        }
        self.check_capacity(&target)?;
        let kind = match request.method {
            rsip::Method::Invite => Kind::InviteClient,
            _ => Kind::NonInviteClient,
        };
        let id = self.new_id();
        let t = self.config.timers;
        let mut tx = Transaction::new(id, kind, target.transport.is_reliable(), request, t.t1);
        tx.give_up = within;
        let actions = tx.start(&t, None);
        self.insert(id, tx, key, target);
        self.apply(id, actions, now);
        Ok(id)
    }

    /// The TU's response for server transaction `tx`.
    pub fn send_response(
        &mut self,
        tx: TxId,
        response: Response,
        now: Instant,
    ) -> Result<(), TxError> {
        let t = self.config.timers;
        let entry = self
            .entries
            .get_mut(&tx)
            .ok_or(TxError::NoSuchTransaction)?;
        if !entry.key.server {
            return Err(TxError::InvalidState);
        }
        let actions = entry.tx.send_response(response, &t)?;
        self.apply(tx, actions, now);
        Ok(())
    }

    /// A message parsed from `source`. Errors concern requests that could not get a
    /// transaction; answer them statelessly with `TxError::status_code`.
    pub fn receive(
        &mut self,
        message: SipMessage,
        source: Target,
        now: Instant,
    ) -> Result<(), TxError> {
        match message {
            SipMessage::Response(response) => {
                self.receive_response(response, source, now);
                Ok(())
            }
            SipMessage::Request(request) => self.receive_request(request, source, now),
        }
    }

    fn receive_response(&mut self, response: Response, source: Target, now: Instant) {
        let t = self.config.timers;
        let id = build::response_key(&response).and_then(|key| self.index.get(&key).copied());
        let Some(id) = id else {
            self.outputs
                .push_back(Output::Event(TxEvent::StrayResponse { response, source }));
            return;
        };
        let entry = self
            .entries
            .get_mut(&id)
            .expect("indexed transactions exist");
        let actions = entry.tx.on_response(response, &t);
        self.apply(id, actions, now);
    }

    fn receive_request(
        &mut self,
        request: Request,
        source: Target,
        now: Instant,
    ) -> Result<(), TxError> {
        let t = self.config.timers;
        let key = build::server_key(&request)?;
        if let Some(&id) = self.index.get(&key) {
            let entry = self
                .entries
                .get_mut(&id)
                .expect("indexed transactions exist");
            let accepted = entry.tx.state == State::Accepted;
            if request.method == rsip::Method::Ack && accepted {
                // An ACK reusing the INVITE's branch while we wait for the 2xx ACK.
                return self.receive_2xx_ack(request, source, now);
            }
            let actions = entry.tx.on_request(request, &t);
            self.apply(id, actions, now);
            return Ok(());
        }
        if request.method == rsip::Method::Ack {
            return self.receive_2xx_ack(request, source, now);
        }
        self.check_capacity(&source)?;
        let cancels = (request.method == rsip::Method::Cancel)
            .then(|| {
                let invite_key = TxKey {
                    method: rsip::Method::Invite.to_string(),
                    ..key.clone()
                };
                self.index.get(&invite_key).copied()
            })
            .flatten();
        let kind = match request.method {
            rsip::Method::Invite => Kind::InviteServer,
            _ => Kind::NonInviteServer,
        };
        let id = self.new_id();
        let event = TxEvent::Request {
            tx: id,
            request: request.clone(),
            source,
            cancels,
        };
        let mut tx = Transaction::new(id, kind, source.transport.is_reliable(), request, t.t1);
        let actions = tx.start(&t, Some(event));
        self.insert(id, tx, key, source);
        self.apply(id, actions, now);
        Ok(())
    }

    fn receive_2xx_ack(
        &mut self,
        request: Request,
        source: Target,
        now: Instant,
    ) -> Result<(), TxError> {
        let acked = build::ack_key_of_request(&request).and_then(|k| self.acks.get(&k).copied());
        if let Some(id) = acked {
            if let Some(entry) = self.entries.get_mut(&id) {
                let actions = entry.tx.on_2xx_ack();
                self.apply(id, actions, now);
            }
        }
        self.outputs.push_back(Output::Event(TxEvent::Ack {
            request,
            source,
            acked,
        }));
        Ok(())
    }

    /// The driver could not send for `tx` (connection gone, ICMP error...).
    pub fn transport_failed(&mut self, tx: TxId, now: Instant) {
        if let Some(entry) = self.entries.get(&tx) {
            let response = matches!(entry.tx.kind, Kind::InviteClient | Kind::NonInviteClient)
                .then(|| crate::sip::message::response_to(&entry.tx.request, 503, Some("Transport Error"), None));
            let actions = vec![
                Action::Event(TxEvent::TransportError { tx, response }),
                Action::Terminate,
            ];
            self.apply(tx, actions, now);
        }
    }

    fn insert(&mut self, id: TxId, tx: Transaction, key: TxKey, target: Target) {
        self.index.insert(key.clone(), id);
        if let Destination::Conn(conn) = target.destination {
            *self.per_conn.entry(conn).or_default() += 1;
        }
        self.entries.insert(
            id,
            Entry {
                tx,
                key,
                target,
                ack_key: None,
                armed: Vec::new(),
            },
        );
    }

    fn apply(&mut self, id: TxId, actions: Vec<Action>, now: Instant) {
        for action in actions {
            match action {
                Action::Send(message) => {
                    let Some(entry) = self.entries.get(&id) else {
                        continue;
                    };
                    let target = entry.target;
                    self.outputs.push_back(Output::Send {
                        tx: id,
                        target,
                        message,
                    });
                }
                Action::Event(event) => self.outputs.push_back(Output::Event(event)),
                Action::Arm(timer, after) => {
                    self.disarm(id, timer);
                    let Some(entry) = self.entries.get_mut(&id) else {
                        continue;
                    };
                    let at = now + after;
                    entry.armed.push((timer, at));
                    self.timers.insert((at, id, timer));
                }
                Action::Disarm(timer) => self.disarm(id, timer),
                Action::IndexAck(key) => {
                    if let Some(entry) = self.entries.get_mut(&id) {
                        entry.ack_key = Some(key.clone());
                        self.acks.insert(key, id);
                    }
                }
                Action::Terminate => self.terminate(id),
            }
        }
    }

    fn disarm(&mut self, id: TxId, timer: Timer) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if let Some(i) = entry.armed.iter().position(|(armed, _)| *armed == timer) {
            let (_, at) = entry.armed.swap_remove(i);
            self.timers.remove(&(at, id, timer));
        }
    }

    fn terminate(&mut self, id: TxId) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        self.index.remove(&entry.key);
        if let Destination::Conn(conn) = entry.target.destination {
            if let Some(count) = self.per_conn.get_mut(&conn) {
                *count -= 1;
                if *count == 0 {
                    self.per_conn.remove(&conn);
                }
            }
        }
        if let Some(key) = entry.ack_key {
            self.acks.remove(&key);
        }
        for (timer, at) in entry.armed {
            self.timers.remove(&(at, id, timer));
        }
        self.outputs
            .push_back(Output::Event(TxEvent::Terminated { tx: id }));
    }
}

#[cfg(test)]
mod tests;
