// Decides whether an incoming INVITE asks to be answered automatically, and after how long.
// Contact-centre servers signal this in one of two ways:
//   Call-Info: <sip:server>;answer-after=N          (N seconds, 0 = at once)
//   Alert-Info: <http://x>;info=alert-autoanswer    (answer at once, or after ;delay=N)
// Kept free of JsSIP and DOM so it can be unit-tested with plain header strings.

const MAX_DELAY_S = 60;

function params(headerValue) {
  // Parameters follow the closing '>' of the URI (or the whole value when there is none).
  const close = headerValue.lastIndexOf('>');
  const tail = close >= 0 ? headerValue.slice(close + 1) : headerValue;
  const out = new Map();
  for (const part of tail.split(';')) {
    const eq = part.indexOf('=');
    const name = (eq >= 0 ? part.slice(0, eq) : part).trim().toLowerCase();
    if (!name) continue;
    const value = eq >= 0 ? part.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1') : '';
    out.set(name, value);
  }
  return out;
}

function seconds(text) {
  if (!/^\d+(\.\d+)?$/.test(text)) return null;
  return Math.min(Number(text), MAX_DELAY_S);
}

// Header values may arrive as one comma-separated line; split on commas outside <...>.
function splitValues(values) {
  const out = [];
  for (const value of values) {
    let depth = 0;
    let start = 0;
    for (let i = 0; i < value.length; i++) {
      const c = value[i];
      if (c === '<') depth++;
      else if (c === '>') depth = Math.max(0, depth - 1);
      else if (c === ',' && depth === 0) {
        out.push(value.slice(start, i));
        start = i + 1;
      }
    }
    out.push(value.slice(start));
  }
  return out.map((v) => v.trim()).filter(Boolean);
}

/**
 * @param {{callInfo?: string[], alertInfo?: string[]}} headers raw header values
 * @returns {number|null} seconds to wait before answering, or null for a normal ringing call
 */
export function autoAnswerDelay({ callInfo = [], alertInfo = [] }) {
  for (const value of splitValues(callInfo)) {
    const p = params(value);
    if (p.has('answer-after')) {
      const s = seconds(p.get('answer-after'));
      if (s !== null) return s;
    }
  }
  for (const value of splitValues(alertInfo)) {
    const p = params(value);
    if ((p.get('info') || '').toLowerCase() === 'alert-autoanswer') {
      const s = p.has('delay') ? seconds(p.get('delay')) : 0;
      return s === null ? 0 : s;
    }
  }
  return null;
}
