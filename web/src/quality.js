// Turns RTCPeerConnection.getStats() reports into the small summary the page shows and the
// test hook exposes, and grades it. Pure functions: the caller keeps the previous summary so
// loss is judged over the last interval, not over the whole call.

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
