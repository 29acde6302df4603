use super::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Receives `request` on `source`, returns the new transaction and the outputs.
fn open(
    layer: &mut TransactionLayer,
    request: Request,
    source: Target,
    now: Instant,
) -> (TxId, Vec<Output>) {
    layer.receive(request.into(), source, now).unwrap();
    let out = drain(layer);
    let tx = events(&out)
        .iter()
        .find_map(|e| match e {
            TxEvent::Request { tx, .. } => Some(*tx),
            _ => None,
        })
        .expect("a Request event");
    (tx, out)
}

#[test]
fn invite_is_passed_up_once_and_answered_100_at_once() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let invite = invite("z9hG4bKs1");
    let (tx, out) = open(&mut layer, invite.clone(), UDP, now);
    assert_eq!(sent(&out).iter().map(status).collect::<Vec<_>>(), vec![100]);
    assert!(
        matches!(out.iter().find(|o| matches!(o, Output::Send { .. })),
        Some(Output::Send { tx: t, target, .. }) if *t == tx && *target == UDP)
    );
    // A retransmission gets the last provisional again and is not passed up.
    layer.receive(invite.clone().into(), UDP, now).unwrap();
    let out = drain(&mut layer);
    assert_eq!(sent(&out).iter().map(status).collect::<Vec<_>>(), vec![100]);
    assert!(events(&out).is_empty());
    layer.send_response(tx, reply(&invite, 180), now).unwrap();
    drain(&mut layer);
    layer.receive(invite.into(), UDP, now).unwrap();
    assert_eq!(
        sent(&drain(&mut layer))
            .iter()
            .map(status)
            .collect::<Vec<_>>(),
        vec![180]
    );
}

#[test]
fn a_failure_response_is_retransmitted_until_ack_then_confirmed() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let start = Instant::now();
    let invite = invite("z9hG4bKs2");
    let (tx, _) = open(&mut layer, invite.clone(), UDP, start);
    layer.send_response(tx, reply(&invite, 486), start).unwrap();
    assert_eq!(
        sent(&drain(&mut layer))
            .iter()
            .map(status)
            .collect::<Vec<_>>(),
        vec![486]
    );
    let seen = run_until(&mut layer, start, secs(4.0));
    let times: Vec<f64> = seen.iter().map(|(at, _)| at.as_secs_f64()).collect();
    assert_eq!(times, vec![0.5, 1.5, 3.5], "timer G doubles");
    // A retransmitted INVITE also gets the 486 again.
    layer
        .receive(invite.clone().into(), UDP, start + secs(4.0))
        .unwrap();
    assert_eq!(
        sent(&drain(&mut layer))
            .iter()
            .map(status)
            .collect::<Vec<_>>(),
        vec![486]
    );
    // The ACK (same branch) is absorbed: no event, no more retransmissions.
    let mut ack = ack_2xx("z9hG4bKs2");
    ack.headers.retain(|h| !matches!(h, rsip::Header::Via(_)));
    ack.headers.push(rsip::Header::Via(rsip::headers::Via::new(
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKs2",
    )));
    layer.receive(ack.into(), UDP, start + secs(4.0)).unwrap();
    assert!(drain(&mut layer).is_empty());
    assert_eq!(
        layer.state(tx),
        Some((Kind::InviteServer, State::Confirmed))
    );
    // Timer I (T4) ends it.
    assert_eq!(layer.poll_timeout(), Some(start + secs(9.0)));
    layer.handle_timeout(start + secs(9.0));
    assert_eq!(events(&drain(&mut layer)), vec![TxEvent::Terminated { tx }]);
}

#[test]
fn a_failure_response_never_acked_ends_with_timer_h() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let start = Instant::now();
    let invite = invite("z9hG4bKs3");
    let (tx, _) = open(&mut layer, invite.clone(), WS, start);
    layer.send_response(tx, reply(&invite, 480), start).unwrap();
    drain(&mut layer);
    // Reliable: no retransmission, only timer H.
    assert_eq!(layer.poll_timeout(), Some(start + secs(32.0)));
    layer.handle_timeout(start + secs(32.0));
    assert_eq!(
        events(&drain(&mut layer)),
        vec![TxEvent::AckTimeout { tx }, TxEvent::Terminated { tx }]
    );
}

#[test]
fn a_2xx_over_udp_is_retransmitted_until_its_end_to_end_ack() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let start = Instant::now();
    let invite = invite("z9hG4bKs4");
    let (tx, _) = open(&mut layer, invite.clone(), UDP, start);
    layer.send_response(tx, reply(&invite, 200), start).unwrap();
    drain(&mut layer);
    let seen = run_until(&mut layer, start, secs(8.0));
    let times: Vec<f64> = seen.iter().map(|(at, _)| at.as_secs_f64()).collect();
    assert_eq!(times, vec![0.5, 1.5, 3.5, 7.5]);
    // Retransmitted INVITEs are absorbed in Accepted.
    layer
        .receive(invite.into(), UDP, start + secs(8.0))
        .unwrap();
    assert!(drain(&mut layer).is_empty());
    // The ACK has its own branch; it is matched by dialog and passed up.
    let ack = ack_2xx("z9hG4bKother");
    layer
        .receive(ack.clone().into(), UDP, start + secs(8.0))
        .unwrap();
    assert_eq!(
        events(&drain(&mut layer)),
        vec![TxEvent::Ack {
            request: ack,
            source: UDP,
            acked: Some(tx)
        }]
    );
    // No more 2xx; timer L ends the transaction quietly.
    let seen = run_until(&mut layer, start, secs(40.0));
    let evs: Vec<_> = seen.into_iter().map(|(_, o)| o).collect();
    assert_eq!(evs, vec![Output::Event(TxEvent::Terminated { tx })]);
}

#[test]
fn a_2xx_never_acked_reports_ack_timeout() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let start = Instant::now();
    let invite = invite("z9hG4bKs5");
    let (tx, _) = open(&mut layer, invite.clone(), WS, start);
    layer.send_response(tx, reply(&invite, 200), start).unwrap();
    drain(&mut layer);
    assert_eq!(
        layer.poll_timeout(),
        Some(start + secs(32.0)),
        "no 2xx retransmission on WS"
    );
    layer.handle_timeout(start + secs(32.0));
    assert_eq!(
        events(&drain(&mut layer)),
        vec![TxEvent::AckTimeout { tx }, TxEvent::Terminated { tx }]
    );
}

#[test]
fn an_ack_matching_nothing_is_passed_up_without_a_transaction() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let ack = ack_2xx("z9hG4bKlost");
    layer
        .receive(ack.clone().into(), WS, Instant::now())
        .unwrap();
    assert_eq!(
        events(&drain(&mut layer)),
        vec![TxEvent::Ack {
            request: ack,
            source: WS,
            acked: None
        }]
    );
    assert!(layer.is_empty());
}

#[test]
fn non_invite_retransmissions_are_absorbed_then_answered_with_the_final() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let bye = request("BYE", "z9hG4bKs6", "10.0.0.1:5060");
    let (tx, out) = open(&mut layer, bye.clone(), UDP, now);
    assert!(sent(&out).is_empty(), "no automatic 100 for non-INVITE");
    layer.receive(bye.clone().into(), UDP, now).unwrap();
    assert!(drain(&mut layer).is_empty());
    layer.send_response(tx, reply(&bye, 200), now).unwrap();
    drain(&mut layer);
    layer.receive(bye.clone().into(), UDP, now).unwrap();
    assert_eq!(
        sent(&drain(&mut layer))
            .iter()
            .map(status)
            .collect::<Vec<_>>(),
        vec![200]
    );
    assert_eq!(
        layer.send_response(tx, reply(&bye, 500), now),
        Err(TxError::InvalidState)
    );
    // Timer J (64*T1) on UDP.
    assert_eq!(layer.poll_timeout(), Some(now + secs(32.0)));
    layer.handle_timeout(now + secs(32.0));
    assert!(layer.is_empty());
}

#[test]
fn non_invite_over_a_reliable_transport_ends_with_its_final_response() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let register = request("REGISTER", "z9hG4bKs7", "h.invalid");
    let (tx, _) = open(&mut layer, register.clone(), WS, now);
    layer.send_response(tx, reply(&register, 401), now).unwrap();
    let out = drain(&mut layer);
    assert_eq!(sent(&out).iter().map(status).collect::<Vec<_>>(), vec![401]);
    assert_eq!(events(&out), vec![TxEvent::Terminated { tx }]);
    assert_eq!(
        layer.send_response(tx, reply(&register, 200), now),
        Err(TxError::NoSuchTransaction)
    );
}

#[test]
fn cancel_is_its_own_transaction_pointing_at_the_invite() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let invite = invite("z9hG4bKs8");
    let (invite_tx, _) = open(&mut layer, invite.clone(), UDP, now);
    let cancel = build_cancel(&invite);
    layer.receive(cancel.clone().into(), UDP, now).unwrap();
    let evs = events(&drain(&mut layer));
    let [TxEvent::Request {
        tx: cancel_tx,
        cancels,
        ..
    }] = evs.as_slice()
    else {
        panic!("{evs:?}")
    };
    assert_eq!(*cancels, Some(invite_tx));
    assert_ne!(*cancel_tx, invite_tx);
    // A CANCEL for nothing we know: the TU answers 481.
    let stray = build_cancel(&super::invite("z9hG4bKunknown"));
    layer.receive(stray.into(), UDP, now).unwrap();
    let evs = events(&drain(&mut layer));
    assert!(matches!(
        evs.as_slice(),
        [TxEvent::Request { cancels: None, .. }]
    ));
}

#[test]
fn the_same_branch_from_another_sent_by_is_another_transaction() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    open(
        &mut layer,
        request("OPTIONS", "z9hG4bKsame", "a.invalid"),
        UDP,
        now,
    );
    open(
        &mut layer,
        request("OPTIONS", "z9hG4bKsame", "b.invalid"),
        UDP,
        now,
    );
    assert_eq!(layer.len(), 2);
}

#[test]
fn rfc_2543_requests_without_magic_cookie_still_match_retransmissions() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let old = request("OPTIONS", "oldbranch", "a.invalid");
    open(&mut layer, old.clone(), UDP, now);
    layer.receive(old.into(), UDP, now).unwrap();
    assert!(drain(&mut layer).is_empty());
    assert_eq!(layer.len(), 1);
}

#[test]
fn a_request_without_via_is_refused_with_400() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let mut bad = request("OPTIONS", "z9hG4bKv", "a.invalid");
    bad.headers.retain(|h| !matches!(h, rsip::Header::Via(_)));
    let error = layer.receive(bad.into(), UDP, Instant::now()).unwrap_err();
    assert_eq!(error.status_code(), 400);
    assert!(method(&SipMessage::Request(request("BYE", "z9hG4bKx", "a"))).is_some());
}
