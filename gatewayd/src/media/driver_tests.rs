//! A worker driven by hand, without its thread: what it does with a full command queue.

use std::sync::mpsc::sync_channel;

use tokio::sync::oneshot;

use super::*;
use crate::media::config::DtlsIdentity;
use crate::media::ports::PortPool;
use crate::media::shards::Pools;

/// One worker whose command queue holds a single command.
fn worker(name: &str, base: u16) -> (Worker, Arc<Link>) {
    let dir = std::env::temp_dir().join(format!("gatewayd-worker-{}-{name}", std::process::id()));
    let mut cfg = MediaConfig::loopback(DtlsIdentity::Path(dir.join("dtls.pem")));
    cfg.public_ports = base..=base + 1;
    cfg.internal_ports = base + 10..=base + 13;
    let poll = Poll::new().unwrap();
    let (tx, commands) = sync_channel(1);
    let (handoff, handoffs) = sync_channel(1);
    let link = Arc::new(Link::new(tx, handoff, waker(&poll).unwrap()));
    let pools = Pools { public: PortPool::singles(cfg.public_ports.clone()), internal: PortPool::pairs(cfg.internal_ports.clone()) };
    let pool = Arc::new(Shared::new(1, 10, pools));
    let identity = Identity::load(&cfg.dtls).unwrap();
    let setup = WorkerSetup { index: 0, cfg, identity, poll, commands, handoffs, peers: vec![link.clone()].into(), pool, tap: Arc::default() };
    (Worker::new(setup).unwrap(), link)
}

fn create(w: &mut Worker) -> CallMedia {
    let (id, (reply, mut rx)) = (w.pool.admit().unwrap().1, oneshot::channel());
    w.command(Command::Create { id, echo_offer: None, reply });
    rx.try_recv().unwrap().unwrap().media
}

fn calls(w: &mut Worker) -> usize {
    let (reply, mut rx) = oneshot::channel();
    w.command(Command::Status { reply });
    rx.try_recv().unwrap()
}

#[test]
fn changes_to_calls_survive_a_full_queue_and_new_calls_are_refused() {
    let (mut w, link) = worker("full", 44700);
    let media = create(&mut w);
    let (status, _) = oneshot::channel();
    link.send(Command::Status { reply: status }).unwrap();
    // The queue is full now.
    let (reply, _) = oneshot::channel();
    assert!(matches!(link.send(Command::Create { id: 99, echo_offer: None, reply }), Err(MediaError::TooManyCalls)), "a new call fails fast");
    let (offer, mut offered) = oneshot::channel();
    link.send(Command::Op { id: media.id(), op: Op::InternalCreateOffer, reply: offer }).expect("an operation is held, not refused");
    let (closed, mut stats) = oneshot::channel();
    link.send(Command::Close { id: media.id(), reply: Some(closed) }).expect("a close is held, not refused");
    media.forget();
    assert!(w.handle_commands());
    assert!(matches!(offered.try_recv(), Ok(Ok(OpResult::Sdp(_)))), "the operation ran");
    assert!(stats.try_recv().is_ok(), "then the close, in the order they were asked");
    assert_eq!(calls(&mut w), 0);
    assert_eq!(w.pool.pools().public.available(), 2, "the call's ports are back");
}

#[test]
fn a_call_with_changes_held_queues_its_next_ones_behind_them() {
    let (mut w, link) = worker("order", 44720);
    let media = create(&mut w);
    let (status, _) = oneshot::channel();
    link.send(Command::Status { reply: status }).unwrap();
    let (offer, mut offered) = oneshot::channel();
    link.send(Command::Op { id: media.id(), op: Op::InternalCreateOffer, reply: offer }).unwrap();
    // The worker takes the queued status: the queue has room again, yet the close must not
    // overtake the operation held before it.
    assert!(matches!(w.commands.try_recv(), Ok(Command::Status { .. })));
    let (closed, mut stats) = oneshot::channel();
    link.send(Command::Close { id: media.id(), reply: Some(closed) }).unwrap();
    assert!(w.commands.try_recv().is_err(), "the close joined the held operation");
    media.forget();
    assert!(w.handle_commands());
    assert!(matches!(offered.try_recv(), Ok(Ok(OpResult::Sdp(_)))), "the operation found its call");
    assert!(stats.try_recv().is_ok());
    assert_eq!(calls(&mut w), 0);
}
