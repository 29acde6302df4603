import test from 'node:test';
import assert from 'node:assert/strict';
import { summarize, intervalLoss, grade } from '../src/quality.js';

const reports = [
  { id: 'C1', type: 'codec', mimeType: 'audio/PCMU', payloadType: 0 },
  { id: 'IN', type: 'inbound-rtp', kind: 'audio', codecId: 'C1', packetsReceived: 250, packetsLost: 3, jitter: 0.012, audioLevel: 0.4, bytesReceived: 40000 },
  { id: 'OUT', type: 'outbound-rtp', kind: 'audio', codecId: 'C1', packetsSent: 248, bytesSent: 39680 },
  { id: 'RIN', type: 'remote-inbound-rtp', kind: 'audio', roundTripTime: 0.045 },
  { id: 'CP', type: 'candidate-pair', nominated: true, currentRoundTripTime: 0.002 },
];

test('summarize picks the audio counters and codec', () => {
  const s = summarize(reports);
  assert.equal(s.packetsReceived, 250);
  assert.equal(s.packetsLost, 3);
  assert.equal(s.packetsSent, 248);
  assert.equal(s.codec, 'PCMU');
  assert.equal(s.audioLevel, 0.4);
  assert.equal(Math.round(s.jitterMs), 12);
  assert.equal(Math.round(s.rttMs), 45, 'RTCP round trip wins over the ICE one');
});

test('summarize falls back to the ICE round trip and copes with an empty report', () => {
  const s = summarize(reports.filter((r) => r.type !== 'remote-inbound-rtp'));
  assert.equal(Math.round(s.rttMs), 2);
  const empty = summarize([]);
  assert.deepEqual([empty.packetsReceived, empty.codec, empty.rttMs], [0, null, null]);
});

test('summarize names the selected path: a relayed candidate and its transport', () => {
  const path = [
    { id: 'T', type: 'transport', selectedCandidatePairId: 'CP2' },
    { id: 'CP2', type: 'candidate-pair', localCandidateId: 'L1', remoteCandidateId: 'R1' },
    { id: 'L1', type: 'local-candidate', candidateType: 'relay', relayProtocol: 'tls' },
    { id: 'R1', type: 'remote-candidate', candidateType: 'host' },
  ];
  const s = summarize([...reports, ...path]);
  assert.equal(s.localCandidateType, 'relay');
  assert.equal(s.relayProtocol, 'tls');
  const direct = summarize([...reports, path[0], path[1], { ...path[2], candidateType: 'host', relayProtocol: undefined }]);
  assert.deepEqual([direct.localCandidateType, direct.relayProtocol], ['host', null]);
  assert.deepEqual([summarize(reports).localCandidateType], [null]);
});

test('loss is judged over the interval', () => {
  const a = { packetsReceived: 100, packetsLost: 0 };
  const b = { packetsReceived: 148, packetsLost: 2 };
  assert.equal(intervalLoss(a, b), 2 / 50);
  assert.equal(intervalLoss(b, b), null);
  assert.equal(intervalLoss(null, a), 0);
});

test('grade', () => {
  assert.equal(grade({ loss: 0, jitterMs: 5, rttMs: 40, receiving: true }), 'good');
  assert.equal(grade({ loss: 0.02, jitterMs: 5, rttMs: 40, receiving: true }), 'fair');
  assert.equal(grade({ loss: 0, jitterMs: 45, rttMs: 40, receiving: true }), 'fair');
  assert.equal(grade({ loss: 0.1, jitterMs: 5, rttMs: 40, receiving: true }), 'poor');
  assert.equal(grade({ loss: 0, jitterMs: 5, rttMs: 40, receiving: false }), 'poor');
  assert.equal(grade({ loss: null, jitterMs: null, rttMs: null, receiving: true }), 'good');
});
