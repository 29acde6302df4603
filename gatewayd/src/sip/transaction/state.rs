//! The four RFC 3261 transaction state machines (section 17), with the RFC 6026 "Accepted"
//! state for INVITE. Each input returns actions; `TransactionLayer` performs them.

use super::build::{ack_for_failure, timeout_response, AckKey};
use super::{TimerConfig, TxError, TxEvent, TxId};
use rsip::{Request, Response, SipMessage};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Timer {
    A,
    B,
    D,
    E,
    F,
    K,
    G,
    H,
    I,
    J,
    L,
    M,
    /// Retransmission of a 2xx to INVITE over an unreliable transport until its ACK.
    Retransmit2xx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InviteClient,
    NonInviteClient,
    InviteServer,
    NonInviteServer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
}

#[derive(Debug)]
pub(crate) enum Action {
    Send(SipMessage),
    Event(TxEvent),
    Arm(Timer, Duration),
    Disarm(Timer),
    /// Remember the ACK key of the 2xx just sent (INVITE server).
    IndexAck(AckKey),
    Terminate,
}

#[derive(Debug)]
pub(crate) struct Transaction {
    pub id: TxId,
    pub kind: Kind,
    pub state: State,
    pub reliable: bool,
    pub request: Request,
    pub last_response: Option<Response>,
    /// The ACK a client INVITE sent for a failure response, resent for retransmissions.
    pub ack: Option<Request>,
    /// Current retransmission interval of the running A, E, G or 2xx timer.
    pub interval: Duration,
    /// INVITE server: the ACK for our 2xx has arrived.
    pub acked: bool,
    /// Client: Timer B or F when the TU wants an answer sooner than 64*T1.
    pub give_up: Option<Duration>,
}

fn class(response: &Response) -> u16 {
    response.status_code.code() / 100
}

impl Transaction {
    pub(crate) fn new(
        id: TxId,
        kind: Kind,
        reliable: bool,
        request: Request,
        t1: Duration,
    ) -> Self {
        let state = match kind {
            Kind::InviteClient => State::Calling,
            Kind::NonInviteClient | Kind::NonInviteServer => State::Trying,
            Kind::InviteServer => State::Proceeding,
        };
        Transaction {
            id,
            kind,
            state,
            reliable,
            request,
            last_response: None,
            ack: None,
            interval: t1,
            acked: false,
            give_up: None,
        }
    }

    /// First actions of a new transaction: send the request (client) or hand it to the TU and,
    /// for INVITE, answer 100 Trying at once (RFC 3261 section 17.2.1).
    pub(crate) fn start(&mut self, t: &TimerConfig, event: Option<TxEvent>) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.kind {
            Kind::InviteClient | Kind::NonInviteClient => {
                let (retransmit, timeout) = match self.kind {
                    Kind::InviteClient => (Timer::A, Timer::B),
                    _ => (Timer::E, Timer::F),
                };
                actions.push(Action::Send(self.request.clone().into()));
                if !self.reliable {
                    actions.push(Action::Arm(retransmit, t.t1));
                }
                actions.push(Action::Arm(timeout, self.give_up.unwrap_or(t.t1 * 64)));
            }
            Kind::InviteServer => {
                actions.extend(event.map(Action::Event));
                let trying = crate::sip::message::response_to(&self.request, 100, None, None);
                self.last_response = Some(trying.clone());
                actions.push(Action::Send(trying.into()));
            }
            Kind::NonInviteServer => actions.extend(event.map(Action::Event)),
        }
        actions
    }

    /// A response for a client transaction.
    pub(crate) fn on_response(&mut self, response: Response, t: &TimerConfig) -> Vec<Action> {
        let id = self.id;
        let pass = |response: Response| Action::Event(TxEvent::Response { tx: id, response });
        match (self.kind, self.state, class(&response)) {
            (Kind::InviteClient, State::Calling | State::Proceeding, 1) => {
                self.state = State::Proceeding;
                vec![
                    Action::Disarm(Timer::A),
                    Action::Disarm(Timer::B),
                    pass(response),
                ]
            }
            (Kind::InviteClient, State::Calling | State::Proceeding, 2) => {
                self.state = State::Accepted;
                vec![
                    Action::Disarm(Timer::A),
                    Action::Disarm(Timer::B),
                    Action::Arm(Timer::M, t.t1 * 64),
                    pass(response),
                ]
            }
            // RFC 6026: 2xx retransmissions go to the TU, which ACKs each.
            (Kind::InviteClient, State::Accepted, 2) => vec![pass(response)],
            (Kind::InviteClient, State::Calling | State::Proceeding, 3..=6) => {
                self.state = State::Completed;
                let ack = ack_for_failure(&self.request, &response);
                self.ack = Some(ack.clone());
                let mut actions = vec![
                    Action::Disarm(Timer::A),
                    Action::Disarm(Timer::B),
                    Action::Send(ack.into()),
                    pass(response),
                ];
                actions.push(self.linger(Timer::D, Duration::from_secs(32)));
                actions
            }
            (Kind::InviteClient, State::Completed, 3..=6) => self
                .ack
                .clone()
                .map(|ack| vec![Action::Send(ack.into())])
                .unwrap_or_default(),
            (Kind::NonInviteClient, State::Trying | State::Proceeding, 1) => {
                self.state = State::Proceeding;
                vec![pass(response)]
            }
            (Kind::NonInviteClient, State::Trying | State::Proceeding, 2..=6) => {
                self.state = State::Completed;
                vec![
                    Action::Disarm(Timer::E),
                    Action::Disarm(Timer::F),
                    pass(response),
                    self.linger(Timer::K, t.t4),
                ]
            }
            // Retransmissions and late provisionals are absorbed.
            _ => Vec::new(),
        }
    }

    /// Arms a lingering timer on unreliable transports, or ends the transaction at once on
    /// reliable ones (where RFC 3261 sets timers D, I, J and K to zero).
    fn linger(&self, timer: Timer, duration: Duration) -> Action {
        if self.reliable {
            Action::Terminate
        } else {
            Action::Arm(timer, duration)
        }
    }

    /// A retransmission of the request of a server transaction (or an ACK matching it).
    pub(crate) fn on_request(&mut self, request: Request, t: &TimerConfig) -> Vec<Action> {
        let is_ack = request.method == rsip::Method::Ack;
        match (self.kind, self.state, is_ack) {
            (Kind::InviteServer, State::Completed, true) => {
                self.state = State::Confirmed;
                vec![
                    Action::Disarm(Timer::G),
                    Action::Disarm(Timer::H),
                    self.linger(Timer::I, t.t4),
                ]
            }
            (Kind::InviteServer, State::Proceeding | State::Completed, false)
            | (Kind::NonInviteServer, State::Proceeding | State::Completed, false) => self
                .last_response
                .clone()
                .map(|r| vec![Action::Send(r.into())])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// A response the TU sends through a server transaction.
    pub(crate) fn send_response(
        &mut self,
        response: Response,
        t: &TimerConfig,
    ) -> Result<Vec<Action>, TxError> {
        let c = class(&response);
        let mut actions = vec![Action::Send(response.clone().into())];
        match (self.kind, self.state, c) {
            (Kind::InviteServer, State::Proceeding, 1) => {}
            (Kind::InviteServer, State::Proceeding, 2) => {
                self.state = State::Accepted;
                if let Some(key) = super::build::ack_key_of_response(&response) {
                    actions.push(Action::IndexAck(key));
                }
                actions.push(Action::Arm(Timer::L, t.t1 * 64));
                if !self.reliable {
                    self.interval = t.t1;
                    actions.push(Action::Arm(Timer::Retransmit2xx, t.t1));
                }
            }
            // RFC 6026 section 7.1: further 2xx from the TU are sent as they are.
            (Kind::InviteServer, State::Accepted, 2) => {}
            (Kind::InviteServer, State::Proceeding, 3..=6) => {
                self.state = State::Completed;
                if !self.reliable {
                    self.interval = t.t1;
                    actions.push(Action::Arm(Timer::G, t.t1));
                }
                actions.push(Action::Arm(Timer::H, t.t1 * 64));
            }
            (Kind::NonInviteServer, State::Trying | State::Proceeding, 1) => {
                self.state = State::Proceeding;
            }
            (Kind::NonInviteServer, State::Trying | State::Proceeding, 2..=6) => {
                self.state = State::Completed;
                actions.push(self.linger(Timer::J, t.t1 * 64));
            }
            _ => return Err(TxError::InvalidState),
        }
        self.last_response = Some(response);
        Ok(actions)
    }

    /// The ACK for our 2xx arrived (matched by dialog): stop retransmitting the 2xx.
    pub(crate) fn on_2xx_ack(&mut self) -> Vec<Action> {
        self.acked = true;
        vec![Action::Disarm(Timer::Retransmit2xx)]
    }

    pub(crate) fn on_timer(&mut self, timer: Timer, t: &TimerConfig) -> Vec<Action> {
        let id = self.id;
        match (timer, self.state) {
            (Timer::A, State::Calling) => {
                self.interval *= 2;
                vec![
                    Action::Send(self.request.clone().into()),
                    Action::Arm(Timer::A, self.interval),
                ]
            }
            (Timer::E, State::Trying | State::Proceeding) => {
                self.interval = match self.state {
                    State::Proceeding => t.t2,
                    _ => (self.interval * 2).min(t.t2),
                };
                vec![
                    Action::Send(self.request.clone().into()),
                    Action::Arm(Timer::E, self.interval),
                ]
            }
            (Timer::B, State::Calling) | (Timer::F, State::Trying | State::Proceeding) => {
                let response = timeout_response(&self.request);
                vec![
                    Action::Event(TxEvent::Timeout { tx: id, response }),
                    Action::Terminate,
                ]
            }
            (Timer::G, State::Completed) | (Timer::Retransmit2xx, State::Accepted) => {
                self.interval = (self.interval * 2).min(t.t2);
                let Some(response) = self.last_response.clone() else {
                    return vec![];
                };
                vec![
                    Action::Send(response.into()),
                    Action::Arm(timer, self.interval),
                ]
            }
            (Timer::H, State::Completed) => {
                vec![
                    Action::Event(TxEvent::AckTimeout { tx: id }),
                    Action::Terminate,
                ]
            }
            (Timer::L, State::Accepted) if !self.acked => {
                vec![
                    Action::Event(TxEvent::AckTimeout { tx: id }),
                    Action::Terminate,
                ]
            }
            (Timer::D | Timer::I | Timer::J | Timer::K | Timer::L | Timer::M, _) => {
                vec![Action::Terminate]
            }
            _ => Vec::new(),
        }
    }
}
