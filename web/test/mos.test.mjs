import test from 'node:test';
import assert from 'node:assert/strict';
import {
  delayImpairment, estimateMos, lossImpairment, mosFromR, mosGrade, oneWayDelayMs, rFactor,
} from '../src/quality.js';

const near = (actual, expected, eps = 0.01) => assert.ok(Math.abs(actual - expected) <= eps, `${actual} is not within ${eps} of ${expected}`);

test('MOS from R follows G.107: 93.2 is about 4.41, the ends are 1 and 4.5', () => {
  near(mosFromR(93.2), 4.41);
  near(mosFromR(80), 4.02);
  near(mosFromR(70), 3.6);
  near(mosFromR(50), 2.58);
  assert.equal(mosFromR(0), 1);
  assert.equal(mosFromR(-12), 1);
  assert.equal(mosFromR(100), 4.5);
  assert.equal(mosFromR(130), 4.5);
  assert.equal(mosFromR(Number.NaN), 1);
  for (let r = 1; r < 100; r++) assert.ok(mosFromR(r + 1) >= mosFromR(r), `MOS grows with R at ${r}`);
});

test('packet loss impairs G.711 with PLC by 95 * Ppl / (Ppl + 25.1)', () => {
  assert.equal(lossImpairment(0), 0);
  assert.equal(lossImpairment(null), 0);
  near(lossImpairment(0.01), 95 / 26.1);
  near(lossImpairment(0.05), 475 / 30.1);
  near(lossImpairment(1), 9500 / 125.1);
  near(lossImpairment(3), 9500 / 125.1, 1e-9);
  assert.equal(lossImpairment(-0.5), 0);
  // Bursty loss (BurstR > 1) hurts more than the same random loss.
  assert.ok(lossImpairment(0.05, { burstR: 2 }) > lossImpairment(0.05));
});

test('delay impairs little up to 177.3 ms one way and steeply beyond', () => {
  assert.equal(delayImpairment(0), 0);
  near(delayImpairment(100), 2.4);
  near(delayImpairment(177.3), 4.255);
  near(delayImpairment(200), 4.8 + 0.11 * 22.7);
  near(delayImpairment(400), 9.6 + 0.11 * 222.7);
  assert.equal(delayImpairment(-5), 0);
});

test('one-way delay: half the round trip, a jitter buffer of twice the jitter, one 20 ms frame', () => {
  assert.equal(oneWayDelayMs({ rttMs: 100, jitterMs: 10 }), 90);
  assert.equal(oneWayDelayMs({ rttMs: null, jitterMs: null }), 20);
});

test('estimates: loopback is excellent, loss and long round trips pull the MOS down', () => {
  const loopback = { lossFraction: 0, jitterMs: 0.5, rttMs: 1 };
  near(rFactor(loopback), 93.2 - 0.024 * 21.5);
  assert.ok(estimateMos(loopback) >= 4.35);
  assert.equal(mosGrade(estimateMos(loopback)), 'good');
  assert.equal(mosGrade(estimateMos({ lossFraction: 0.01, jitterMs: 5, rttMs: 40 })), 'good');
  assert.equal(mosGrade(estimateMos({ lossFraction: 0.05, jitterMs: 5, rttMs: 40 })), 'fair');
  assert.equal(mosGrade(estimateMos({ lossFraction: 0.1, jitterMs: 5, rttMs: 40 })), 'poor');
  assert.equal(mosGrade(estimateMos({ lossFraction: 0, jitterMs: 20, rttMs: 600 })), 'poor');
  assert.equal(estimateMos({ lossFraction: 1, jitterMs: 100, rttMs: 2000 }), 1);
  assert.equal(mosGrade(null), null);
  assert.equal(mosGrade(3.6), 'fair');
});
