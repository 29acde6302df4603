#!/usr/bin/env bash
# Ban latency of gatewayd's guard + firewall, and of fail2ban as the anchor, in network
# namespaces. Needs root, nft, ip netns; the anchor needs `apt-get install fail2ban python3-pyinotify`.
set -euo pipefail
cd "$(dirname "$0")/../.."
export BAN_RUNS="${BAN_RUNS:-30}"
cargo test --release -p gatewayd --test firewall_ban_latency -- --ignored --nocapture --test-threads 1 2>&1 |
    grep -E '^(run [0-9]+|gatewayd|fail2ban|SKIPPED)|first dropped packet:|returned:'
echo "commit $(git rev-parse --short HEAD), $(nproc) vCPUs, $(uname -r), $(nft --version), $(fail2ban-server --version 2>/dev/null | head -1)"
