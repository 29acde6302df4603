//! Runs the gatewayd media bridge alone, with a line protocol on TCP so the load client can set
//! up calls: `CALL <plain-rtp-port>` -> `OFFER <browser offer>`; `ANSWER <browser answer>` ->
//! `OK <internal-rtp-addr>`. SDP travels with CRLF escaped as `\n`. Loopback only.
//!
//! media-bridge [LISTEN_ADDR] [opus]: with `opus` the browser side is offered Opus only
//! (agent_codecs = [opus], as a profile with `media.agent_codecs = ["opus"]`) and every call
//! is transcoded to and from the server side's PCMU. MEDIA_WORKERS=N runs N media worker
//! threads (default: the CPUs the process may use, as the daemon does).

use std::time::Duration;

use gatewayd::media::{AudioCodec, DtlsIdentity, MediaConfig, MediaEngine};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

fn escape(s: &str) -> String {
    s.replace("\r\n", "\\n")
}
fn unescape(s: &str) -> String {
    s.trim().replace("\\n", "\r\n")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:7700".into());
    let mut cfg = MediaConfig::loopback(DtlsIdentity::Path(std::env::temp_dir().join("media-bench-dtls.pem")));
    cfg.public_ports = 20000..=21999;
    cfg.internal_ports = 22000..=25999;
    cfg.max_calls = 2000;
    cfg.no_media_timeout = Duration::from_secs(60);
    if args.get(2).map(String::as_str) == Some("opus") {
        cfg.agent_codecs = vec![AudioCodec::Opus];
    }
    let engine = match std::env::var("MEDIA_WORKERS").ok().and_then(|n| n.parse().ok()) {
        Some(n) => MediaEngine::start_with_workers(cfg, n),
        None => MediaEngine::start(cfg),
    };
    let engine = std::sync::Arc::new(engine.expect("media engine starts"));
    eprintln!("media workers: {}", engine.workers());
    let listener = TcpListener::bind(&listen).await.expect("listen");
    println!("ready {}", std::process::id());
    loop {
        let (sock, _) = listener.accept().await.expect("accept");
        let _ = sock.set_nodelay(true);
        let engine = engine.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = sock.into_split();
            let mut lines = BufReader::new(rd).lines();
            let mut calls = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let (verb, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                let reply = match verb {
                    "CALL" => {
                        let port: u16 = rest.trim().parse().unwrap_or(0);
                        match engine.create_call().await {
                            Ok(call) => {
                                let server = format!(
                                    "v=0\r\no=srv 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
                                );
                                let internal = call.internal_answer(&server).await.expect("internal answer");
                                let offer = call.browser_create_offer().await.expect("browser offer");
                                let port = internal.lines().find_map(|l| l.strip_prefix("m=audio ")).and_then(|l| l.split(' ').next()).unwrap_or("0").to_owned();
                                calls.push((call, port));
                                format!("OFFER {}\n", escape(&offer))
                            }
                            Err(e) => format!("ERR {e}\n"),
                        }
                    }
                    "ANSWER" => match calls.last() {
                        Some((call, port)) => match call.browser_accept_answer(&unescape(rest)).await {
                            Ok(()) => format!("OK 127.0.0.1:{port}\n"),
                            Err(e) => format!("ERR {e}\n"),
                        },
                        None => "ERR no call\n".to_owned(),
                    },
                    "LATENCY" => match engine.take_forwarding_latency().await {
                        Ok(l) => format!("LAT {} {} {} {}\n", l.packets, l.p50_us, l.p99_us, l.max_us),
                        Err(e) => format!("ERR {e}\n"),
                    },
                    _ => "ERR verb\n".to_owned(),
                };
                if wr.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
            for (call, _) in calls {
                let _ = call.close().await;
            }
        });
    }
}
