// Turns RTCPeerConnection.getStats() reports into the small summary the page shows and the
// test hook exposes, grades it, and estimates a MOS from loss, jitter and round trip (a
// simplified G.107 E-model). Pure functions: the caller keeps the previous summary so loss is
// judged over the last interval, not over the whole call.

/**
 * @param {Iterable<object>} reports values of an RTCStatsReport
 * @returns {object} summary of the audio stream
 */
export function summarize(reports) {
  const byId = new Map();
  for (const r of reports) byId.set(r.id, r);
  const s = {
    packetsSent: 0,
    packetsReceived: 0,
    packetsLost: 0,
    jitterMs: null,
    rttMs: null,
    audioLevel: null,
    codec: null,
    bytesReceived: 0,
    bytesSent: 0,
  };
  for (const r of byId.values()) {
    if (r.kind !== 'audio' && r.mediaType !== 'audio' && r.type !== 'candidate-pair') continue;
    switch (r.type) {
      case 'inbound-rtp': {
        s.packetsReceived += r.packetsReceived || 0;
        s.packetsLost += Math.max(0, r.packetsLost || 0);
        s.bytesReceived += r.bytesReceived || 0;
        if (typeof r.jitter === 'number') s.jitterMs = r.jitter * 1000;
        if (typeof r.audioLevel === 'number') s.audioLevel = r.audioLevel;
        const codec = byId.get(r.codecId);
        if (codec && codec.mimeType) s.codec = codec.mimeType.replace(/^audio\//i, '');
        break;
      }
      case 'outbound-rtp': {
        s.packetsSent += r.packetsSent || 0;
        s.bytesSent += r.bytesSent || 0;
        if (!s.codec) {
          const codec = byId.get(r.codecId);
          if (codec && codec.mimeType) s.codec = codec.mimeType.replace(/^audio\//i, '');
        }
        break;
      }
      case 'remote-inbound-rtp': {
        if (typeof r.roundTripTime === 'number') s.rttMs = r.roundTripTime * 1000;
        break;
      }
      default:
        break;
    }
  }
  // The path media takes: the selected pair's local candidate ("host", "srflx" or "relay", and
  // for a relay the transport to the TURN server: "udp", "tcp" or "tls").
  s.localCandidateType = null;
  s.relayProtocol = null;
  for (const r of byId.values()) {
    if (r.type !== 'transport' || !r.selectedCandidatePairId) continue;
    const pair = byId.get(r.selectedCandidatePairId);
    const local = pair && byId.get(pair.localCandidateId);
    if (local) {
      s.localCandidateType = local.candidateType || null;
      s.relayProtocol = local.candidateType === 'relay' ? local.relayProtocol || null : null;
    }
  }
  // Fall back to the ICE round-trip time until the far end has sent an RTCP receiver report.
  if (s.rttMs === null) {
    for (const r of byId.values()) {
      if (r.type === 'candidate-pair' && r.nominated && typeof r.currentRoundTripTime === 'number') {
        s.rttMs = r.currentRoundTripTime * 1000;
      }
    }
  }
  return s;
}

/**
 * Loss fraction over the interval between two summaries (0..1), or null without new packets.
 */
export function intervalLoss(prev, cur) {
  const received = cur.packetsReceived - (prev ? prev.packetsReceived : 0);
  const lost = cur.packetsLost - (prev ? prev.packetsLost : 0);
  const expected = received + Math.max(0, lost);
  if (expected <= 0) return null;
  return Math.max(0, lost) / expected;
}

// Thresholds follow the usual E-model comfort zones for G.711 voice.
export function grade({ loss, jitterMs, rttMs, receiving }) {
  if (!receiving) return 'poor';
  const l = loss ?? 0;
  const j = jitterMs ?? 0;
  const r = rttMs ?? 0;
  if (l < 0.01 && j < 30 && r < 300) return 'good';
  if (l < 0.05 && j < 60 && r < 500) return 'fair';
  return 'poor';
}

// ---- MOS estimate ---------------------------------------------------------------------
// A simplified ITU-T G.107 E-model for G.711 with packet-loss concealment: all other
// impairments at their defaults, so R = 93.2 - Id - Ie,eff.

/** Default R for G.711 with every other impairment at its G.107 default. */
export const R_DEFAULT = 93.2;
/** G.711: equipment impairment Ie = 0; packet-loss robustness Bpl = 25.1 with PLC (G.113). */
export const G711_IE = 0;
export const G711_BPL = 25.1;
/** Packetisation of one 20 ms G.711 frame, the usual ptime. */
export const G711_FRAME_MS = 20;

/**
 * Mouth-to-ear delay estimate (ms): half the round trip, a jitter buffer twice the jitter,
 * and one frame of packetisation.
 */
export function oneWayDelayMs({ rttMs, jitterMs }) {
  return Math.max(0, rttMs ?? 0) / 2 + 2 * Math.max(0, jitterMs ?? 0) + G711_FRAME_MS;
}

/** Delay impairment Id for a one-way delay in ms (Cole and Rosenbluth's fit of G.107). */
export function delayImpairment(delayMs) {
  const d = Math.max(0, delayMs);
  return 0.024 * d + (d > 177.3 ? 0.11 * (d - 177.3) : 0);
}

/**
 * Effective equipment impairment Ie,eff for a loss fraction (0..1), random loss (BurstR = 1):
 * Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl), Ppl in percent.
 */
export function lossImpairment(lossFraction, { ie = G711_IE, bpl = G711_BPL, burstR = 1 } = {}) {
  const ppl = Math.min(100, Math.max(0, (lossFraction ?? 0) * 100));
  return ie + ((95 - ie) * ppl) / (ppl / burstR + bpl);
}

/** The transmission rating R for the measured figures. */
export function rFactor({ lossFraction, jitterMs, rttMs }) {
  return R_DEFAULT - delayImpairment(oneWayDelayMs({ rttMs, jitterMs })) - lossImpairment(lossFraction);
}

/** MOS (1..4.5) from R, the formula of G.107 Annex B. */
export function mosFromR(r) {
  if (!(r > 0)) return 1;
  if (r >= 100) return 4.5;
  const mos = 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6;
  return Math.min(4.5, Math.max(1, mos));
}

/** MOS estimate for the measured loss fraction (0..1), jitter and round trip (ms). */
export function estimateMos(figures) {
  return mosFromR(rFactor(figures));
}

/** Words for a MOS: R >= 80 (MOS about 4) satisfies users, R < 70 (about 3.6) many complain. */
export function mosGrade(mos) {
  if (mos === null || mos === undefined || Number.isNaN(mos)) return null;
  if (mos >= 4.0) return 'good';
  if (mos >= 3.6) return 'fair';
  return 'poor';
}
