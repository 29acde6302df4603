import test from 'node:test';
import assert from 'node:assert/strict';
import { autoAnswerDelay } from '../src/autoanswer.js';

test('a plain call rings', () => {
  assert.equal(autoAnswerDelay({}), null);
  assert.equal(autoAnswerDelay({ callInfo: ['<http://x/info>;purpose=info'] }), null);
  assert.equal(autoAnswerDelay({ alertInfo: ['<http://x/ring.wav>'] }), null);
});

test('Call-Info answer-after gives the delay in seconds', () => {
  assert.equal(autoAnswerDelay({ callInfo: ['<sip:192.168.210.81>;answer-after=0'] }), 0);
  assert.equal(autoAnswerDelay({ callInfo: ['<sip:pbx>;answer-after=3'] }), 3);
  assert.equal(autoAnswerDelay({ callInfo: ['<sip:pbx> ; Answer-After = 2'] }), 2);
  assert.equal(autoAnswerDelay({ callInfo: ['<http://a;b=c>;purpose=info, <sip:pbx>;answer-after=1'] }), 1);
});

test('Alert-Info alert-autoanswer answers at once or after delay', () => {
  assert.equal(autoAnswerDelay({ alertInfo: ['<http://127.0.0.1>;info=alert-autoanswer'] }), 0);
  assert.equal(autoAnswerDelay({ alertInfo: ['<http://x>;info=alert-autoanswer;delay=4'] }), 4);
  assert.equal(autoAnswerDelay({ alertInfo: ['info=alert-autoanswer'] }), 0);
});

test('nonsense values do not auto-answer and delays are capped', () => {
  assert.equal(autoAnswerDelay({ callInfo: ['<sip:pbx>;answer-after=soon'] }), null);
  assert.equal(autoAnswerDelay({ callInfo: ['<sip:pbx>;answer-after=-1'] }), null);
  assert.equal(autoAnswerDelay({ callInfo: ['<sip:pbx>;answer-after=9999'] }), 60);
  // a parameter inside the URI is not a header parameter
  assert.equal(autoAnswerDelay({ callInfo: ['<sip:pbx;answer-after=1>'] }), null);
});
