use super::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn invite_over_udp_retransmits_with_timer_a_and_times_out_with_b() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let start = Instant::now();
    let tx = layer.send_request(invite("z9hG4bKa"), UDP, start).unwrap();
    assert_eq!(sent(&drain(&mut layer)).len(), 1);
    let seen = run_until(&mut layer, start, secs(40.0));
    let resend_times: Vec<Duration> = seen
        .iter()
        .filter(|(_, o)| matches!(o, Output::Send { .. }))
        .map(|(at, _)| *at)
        .collect();
    let expected: Vec<Duration> = [0.5, 1.5, 3.5, 7.5, 15.5, 31.5].map(secs).to_vec();
    assert_eq!(resend_times, expected);
    let timeout = seen.iter().find_map(|(at, o)| match o {
        Output::Event(TxEvent::Timeout { tx: t, response }) if *t == tx => {
            Some((*at, response.clone()))
        }
        _ => None,
    });
    let (at, response) = timeout.expect("timer B fires");
    assert_eq!(at, secs(32.0));
    assert_eq!(response.status_code.code(), 408);
    assert!(layer.is_empty());
}

#[test]
fn a_provisional_stops_invite_retransmissions_and_timer_b() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let invite = invite("z9hG4bKp");
    let tx = layer.send_request(invite.clone(), UDP, now).unwrap();
    drain(&mut layer);
    let ringing = reply(&invite, 180);
    layer.receive(ringing.clone().into(), UDP, now).unwrap();
    assert_eq!(
        events(&drain(&mut layer)),
        vec![TxEvent::Response {
            tx,
            response: ringing
        }]
    );
    assert_eq!(layer.poll_timeout(), None);
    assert_eq!(
        layer.state(tx),
        Some((Kind::InviteClient, State::Proceeding))
    );
}

#[test]
fn a_failure_response_is_acked_by_the_transaction_and_retransmissions_reack() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let invite = invite("z9hG4bKf");
    let tx = layer.send_request(invite.clone(), UDP, now).unwrap();
    drain(&mut layer);
    let busy = reply(&invite, 486);
    layer.receive(busy.clone().into(), UDP, now).unwrap();
    let out = drain(&mut layer);
    let acks = sent(&out);
    assert_eq!(acks.len(), 1);
    let SipMessage::Request(ack) = &acks[0] else {
        panic!("ACK expected")
    };
    assert_eq!(ack.method, rsip::Method::Ack);
    assert_eq!(ack.cseq_header().unwrap().value(), "1 ACK");
    assert_eq!(
        ack.to_header().unwrap().value(),
        "<sip:600@lab.invalid>;tag=tt"
    );
    assert_eq!(
        ack.via_header().unwrap().value(),
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKf"
    );
    assert_eq!(ack.route_header(), invite.route_header());
    assert_eq!(
        events(&out),
        vec![TxEvent::Response {
            tx,
            response: busy.clone()
        }]
    );
    // The retransmitted 486 is answered with the same ACK and not shown to the TU.
    layer.receive(busy.into(), UDP, now).unwrap();
    let out = drain(&mut layer);
    assert_eq!(sent(&out), acks);
    assert!(events(&out).is_empty());
    // Timer D (32 s on UDP) ends it.
    assert_eq!(layer.poll_timeout(), Some(now + secs(32.0)));
    layer.handle_timeout(now + secs(32.0));
    assert_eq!(events(&drain(&mut layer)), vec![TxEvent::Terminated { tx }]);
}

#[test]
fn a_2xx_is_passed_up_with_its_retransmissions_and_never_acked_here() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let invite = invite("z9hG4bKok");
    let tx = layer.send_request(invite.clone(), UDP, now).unwrap();
    drain(&mut layer);
    let ok = reply(&invite, 200);
    for _ in 0..2 {
        layer.receive(ok.clone().into(), UDP, now).unwrap();
        let out = drain(&mut layer);
        assert!(sent(&out).is_empty(), "the ACK for a 2xx is the TU's");
        assert_eq!(
            events(&out),
            vec![TxEvent::Response {
                tx,
                response: ok.clone()
            }]
        );
    }
    assert_eq!(layer.state(tx), Some((Kind::InviteClient, State::Accepted)));
    layer.handle_timeout(now + secs(32.0));
    assert_eq!(events(&drain(&mut layer)), vec![TxEvent::Terminated { tx }]);
}

#[test]
fn invite_over_a_reliable_transport_is_sent_once_and_ends_on_failure_at_once() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let invite = invite("z9hG4bKws");
    let tx = layer.send_request(invite.clone(), WS, now).unwrap();
    drain(&mut layer);
    // Only timer B runs.
    assert_eq!(layer.poll_timeout(), Some(now + secs(32.0)));
    layer.receive(reply(&invite, 603).into(), WS, now).unwrap();
    let out = drain(&mut layer);
    assert_eq!(sent(&out).len(), 1, "the ACK");
    assert!(matches!(out.last(), Some(Output::Event(TxEvent::Terminated { tx: t })) if *t == tx));
    assert!(layer.is_empty());
}

#[test]
fn non_invite_over_udp_backs_off_to_t2_and_times_out_with_f() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let start = Instant::now();
    let tx = layer
        .send_request(request("OPTIONS", "z9hG4bKo", "gw.invalid"), UDP, start)
        .unwrap();
    drain(&mut layer);
    let seen = run_until(&mut layer, start, secs(40.0));
    let resend_times: Vec<f64> = seen
        .iter()
        .filter(|(_, o)| matches!(o, Output::Send { .. }))
        .map(|(at, _)| at.as_secs_f64())
        .collect();
    assert_eq!(&resend_times[..5], &[0.5, 1.5, 3.5, 7.5, 11.5]);
    assert!(resend_times
        .windows(2)
        .skip(3)
        .all(|w| (w[1] - w[0] - 4.0).abs() < 1e-9));
    assert!(seen.iter().any(|(at, o)| *at == secs(32.0)
        && matches!(o, Output::Event(TxEvent::Timeout { tx: t, .. }) if *t == tx)));
    assert!(layer.is_empty());
}

#[test]
fn non_invite_in_proceeding_retransmits_every_t2() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let start = Instant::now();
    let options = request("OPTIONS", "z9hG4bKq", "gw.invalid");
    layer.send_request(options.clone(), UDP, start).unwrap();
    layer
        .receive(reply(&options, 100).into(), UDP, start)
        .unwrap();
    drain(&mut layer);
    let seen = run_until(&mut layer, start, secs(10.0));
    let times: Vec<f64> = seen
        .iter()
        .filter(|(_, o)| matches!(o, Output::Send { .. }))
        .map(|(at, _)| at.as_secs_f64())
        .collect();
    // The first timer E was armed at T1; from then on it is T2.
    assert_eq!(times, vec![0.5, 4.5, 8.5]);
}

#[test]
fn non_invite_final_response_completes_and_absorbs_retransmissions() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let options = request("OPTIONS", "z9hG4bKr", "gw.invalid");
    let tx = layer.send_request(options.clone(), UDP, now).unwrap();
    drain(&mut layer);
    let ok = reply(&options, 200);
    layer.receive(ok.clone().into(), UDP, now).unwrap();
    assert_eq!(
        events(&drain(&mut layer)),
        vec![TxEvent::Response {
            tx,
            response: ok.clone()
        }]
    );
    layer.receive(ok.into(), UDP, now).unwrap();
    assert!(drain(&mut layer).is_empty());
    // Timer K = T4.
    assert_eq!(layer.poll_timeout(), Some(now + secs(5.0)));
    layer.handle_timeout(now + secs(5.0));
    assert!(layer.is_empty());
}

#[test]
fn responses_match_by_branch_and_cseq_method() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let invite = invite("z9hG4bKm");
    let invite_tx = layer.send_request(invite.clone(), WS, now).unwrap();
    let cancel = build_cancel(&invite);
    let cancel_tx = layer.send_request(cancel.clone(), WS, now).unwrap();
    assert_ne!(invite_tx, cancel_tx);
    drain(&mut layer);
    let cancel_ok = reply(&cancel, 200);
    layer.receive(cancel_ok.clone().into(), WS, now).unwrap();
    let terminated = reply(&invite, 487);
    layer.receive(terminated.clone().into(), WS, now).unwrap();
    let evs = events(&drain(&mut layer));
    assert!(evs.contains(&TxEvent::Response {
        tx: cancel_tx,
        response: cancel_ok
    }));
    assert!(evs.contains(&TxEvent::Response {
        tx: invite_tx,
        response: terminated
    }));
}

#[test]
fn requests_without_a_proper_branch_ack_or_a_reused_branch_are_refused() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let old_style = request("OPTIONS", "1234", "gw.invalid");
    assert_eq!(
        layer.send_request(old_style, UDP, now),
        Err(TxError::MissingBranch)
    );
    let ack = ack_2xx("z9hG4bKack");
    assert_eq!(
        layer.send_request(ack, UDP, now),
        Err(TxError::AckNotTransactional)
    );
    layer
        .send_request(request("OPTIONS", "z9hG4bKdup", "gw.invalid"), UDP, now)
        .unwrap();
    assert_eq!(
        layer.send_request(request("OPTIONS", "z9hG4bKdup", "gw.invalid"), UDP, now),
        Err(TxError::Duplicate)
    );
}
