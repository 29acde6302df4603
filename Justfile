# gatewayd's entry points. Run `./scripts/setup` once on a fresh Debian machine first.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Build the softphone bundle (web/dist) with esbuild.
web:
    if [ -f package.json ]; then npm run --silent build; fi

# Build the daemon (with the softphone embedded).
build: web
    cargo build

# Run the gateway on the lab profile: open https://127.0.0.1:8443/ and log in as 5001 / pass5001.
run-lab: build
    @echo "softphone: https://127.0.0.1:8443/  agents 5001-5010, password pass<DN> (e.g. pass5001); dial 600 for an echo test"
    ./target/debug/gatewayd run --profile profiles/lab.toml

# Every test: Rust unit and integration tests, then the browser tests.
# The netns tests (firewall_*_netns, ha_netns: keepalived pair, shared bans; ha_scale_out_netns;
# tls_acme_netns: ACME on ports 80/443; the browser's ha-netns) run here as root and skip with a
# message otherwise.
test: build
    cargo test --workspace
    if [ -f package.json ]; then GATEWAYD_REQUIRE=1 npm run --silent test:browser; fi

# Check the example profiles.
validate:
    cargo run --quiet -- validate profiles/*.toml

# Regenerate the JSON Schema and the profile reference from the profile types.
schema:
    cargo run --quiet -- schema > schemas/profile.schema.json
    cargo run --quiet -- schema --markdown > docs/profile-reference.md

# Every benchmark against its anchor (installed from Debian first); figures go to bench/RESULTS.md.
bench: bench-setup bench-media bench-bans bench-calls bench-register bench-turn

# The anchors: rtpengine, Kamailio, fail2ban, perf.
bench-setup:
    bench/setup

# Media bridge against rtpengine: CALLS bridged calls for SECONDS (needs rtpengine-daemon for the ratio).
bench-media calls="500" seconds="30":
    bench/media/run.sh {{calls}} {{seconds}}

# The same with every call transcoded (Opus browser side, PCMU SIP side), against rtpengine's transcoding.
bench-media-transcode calls="40" seconds="30":
    MODE=transcode bench/media/run.sh {{calls}} {{seconds}}

# Call setups/s through the B2BUA, and through Kamailio as the anchor (MODE: signalling or media).
bench-calls rate="200" seconds="30" agents="500" mode="signalling":
    bench/calls/run.sh {{rate}} {{seconds}} {{agents}} {{mode}}

# TURN relay against coturn: ALLOCATIONS allocations at 50 packets/s each way for SECONDS (TRANSPORT=tcp for TCP).
bench-turn allocations="500" seconds="30":
    bench/turn/run.sh {{allocations}} {{seconds}}

# Time from the Nth failure to the first dropped packet, against fail2ban (root, netns).
bench-bans:
    bench/bans/run.sh

# A statically linked gatewayd for x86-64 (glibc static-pie; runs `validate` on any x86-64
# Linux without Rust or libraries): target/x86_64-unknown-linux-gnu/release/gatewayd.
static: web
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu -p gatewayd
    file target/x86_64-unknown-linux-gnu/release/gatewayd

# The Debian package around the static binary: target/deb/gatewayd_VERSION_amd64.deb.
deb: static
    packaging/deb/build

# The static binary validates profiles in an empty root (no libraries, no Rust), and the .deb
# installs into a Debian 12 container (debootstrap + systemd-nspawn) whose systemd runs the
# unit until /health answers (root; see packaging/README.md).
package-test: deb
    packaging/test

# Build the appliance image: image/out/gatewayd.raw, gatewayd.raw.zst and the update bundle
# gatewayd_VERSION.update.tar (see image/README.md).
image:
    image/build

# Build the appliance image, boot it in qemu and check it, A/B updates and rollback included
# (image/test/run; IMAGE_TEST_UPDATE=0 skips the updates).
image-test: image
    image/test/run

# Every fuzz target for SECONDS each with libFuzzer (cargo-fuzz, installed when missing), one
# after the other; crashes go to fuzz/artifacts/, the figures to fuzz/last-run.txt.
fuzz seconds="600" *targets="":
    fuzz/run {{seconds}} {{targets}}

# SIPVicious, nmap, testssl.sh, floods and resource bounds, 300 agents behind one address,
# each test alone; the FIGURE lines go to target/attack/figures.txt (record: docs/security.md).
# Attack tools and floods against the daemon in network namespaces (root; about 25 minutes).
attack: build
    mkdir -p target/attack
    cargo test -p gatewayd --test attack_netns --test attack_long --no-run
    : > target/attack/figures.txt
    for t in attack_netns attack_long; do \
      GATEWAYD_ATTACK=1 timeout 1800 cargo test -q -p gatewayd --test $t -- --nocapture --test-threads 1 2>&1 \
        | tee -a target/attack/run.log | grep --line-buffered '^FIGURE' | sed 's/^FIGURE //' | tee -a target/attack/figures.txt; \
      test "${PIPESTATUS[0]}" = 0; \
    done
    echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)')" >> target/attack/figures.txt

# The short fuzz run CI does (within `just test`): each target as a bolero property test,
# its seeds and a few hundred mutations of them, about a second in all.
fuzz-smoke:
    cargo test -p gatewayd --lib fuzz::

# REGISTER with digest over WSS at RATE/s (nonce reuse and fresh challenges), against Kamailio.
bench-register rate="2000" seconds="20" agents="200":
    bench/calls/register.sh {{rate}} {{seconds}} {{agents}}
