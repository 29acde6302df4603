//! The media bridge when call control stops waiting for it: a call whose creation was given
//! up must not stay behind holding its ports and its place under the call limit.

use gatewayd::media::{DtlsIdentity, MediaConfig, MediaEngine};

fn config(name: &str, base: u16) -> MediaConfig {
    let dir = std::env::temp_dir().join(format!("gatewayd-media-overload-{}-{name}", std::process::id()));
    let mut cfg = MediaConfig::loopback(DtlsIdentity::Path(dir.join("dtls.pem")));
    cfg.public_ports = base..=base;
    cfg.internal_ports = base + 10..=base + 11; // one RTP/RTCP pair
    cfg.max_calls = 1;
    cfg
}

#[tokio::test]
async fn a_create_given_up_leaves_no_call_behind() {
    let engine = MediaEngine::start_with_workers(config("abandoned", 44600), 1).unwrap();
    let before = engine.status().await.unwrap();
    for _ in 0..20 {
        // Polled once, so the command is queued, then dropped as call control's timeout
        // drops it: the worker handles it before, while or after the asker is gone.
        let mut create = Box::pin(engine.create_call());
        let _ = futures::poll!(&mut create);
        drop(create);
        // The status command queues behind the create on the one worker.
        let after = engine.status().await.unwrap();
        assert_eq!(after, before, "the abandoned call's ports and place are back");
    }
    let call = engine.create_call().await.expect("the only place and ports are free again");
    call.close().await.unwrap();
    engine.shutdown();
}
