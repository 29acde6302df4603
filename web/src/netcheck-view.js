// The "Network check" panel: words for each step of a NetworkCheck, rendered into the markup
// index.html holds (text and data attributes only, nothing built from strings, so the page's
// CSP holds), and the button that starts a check.

const $ = (id) => document.getElementById(id);

const ms = (v) => `${Math.round(v)} ms`;

/** Text and tone ('ok', 'warn', 'bad', 'busy' or 'none') for the WSS step. */
export function describeWss(w) {
  switch (w.state) {
    case 'pending':
      return { text: '–', tone: 'none' };
    case 'checking':
      return { text: 'Checking…', tone: 'busy' };
    case 'registered':
      return {
        text: `Registered: connects in ${ms(w.connectMs)}, ${w.registerMs === null ? '' : `registered in ${ms(w.registerMs)}, `}SIP round trip ${ms(w.sipRttMs)}`,
        tone: 'ok',
      };
    case 'connected':
      return { text: `Connects in ${ms(w.connectMs)} but does not register: ${w.error}`, tone: 'bad' };
    case 'unreachable':
      return { text: `Cannot connect: ${w.error}`, tone: 'bad' };
    default:
      return { text: w.state, tone: 'none' };
  }
}

/** Text and tone for one TURN transport. */
export function describeTransport(t) {
  switch (t.state) {
    case 'pending':
      return { text: '–', tone: 'none' };
    case 'checking':
      return { text: 'Checking…', tone: 'busy' };
    case 'reachable': {
      const some = t.uris > 1 ? ` (${t.reachableUris} of ${t.uris} addresses)` : '';
      return { text: `Reachable: relay in ${ms(t.ms)}${some}`, tone: t.reachableUris < t.uris ? 'warn' : 'ok' };
    }
    case 'unreachable':
      return { text: `Unreachable: ${t.error || 'no relay candidate'}`, tone: 'bad' };
    case 'not offered':
      return { text: 'Not offered by the gateway', tone: 'none' };
    case 'no credentials':
      return { text: `No credentials: ${t.error}`, tone: 'bad' };
    default:
      return { text: t.state, tone: 'none' };
  }
}

const pct = (f) => `${(f * 100).toFixed(1)} %`;

/** Text and tone for the echo call. */
export function describeEcho(e) {
  switch (e.state) {
    case 'pending':
      return { text: '–', tone: 'none' };
    case 'calling':
      return { text: `Calling ${e.number}…`, tone: 'busy' };
    case 'measuring':
      return { text: `Measuring… (${e.samples} s)`, tone: 'busy' };
    case 'done': {
      const figures = [
        `loss ${pct(e.lossFraction)}`,
        `jitter ${e.jitterMs === null ? '–' : `${e.jitterMs.toFixed(1)} ms`}`,
        `round trip ${e.rttMs === null ? '–' : ms(e.rttMs)}`,
      ].join(', ');
      const tone = e.grade === 'good' ? 'ok' : e.grade === 'fair' ? 'warn' : 'bad';
      const path = e.localCandidateType === 'relay' ? `; through the ${(e.relayProtocol || '').toUpperCase() || 'TURN'} relay` : '';
      return { text: `MOS ${e.mos.toFixed(1)} (${e.grade}): ${figures}${path}${e.error ? `; ${e.error}` : ''}`, tone };
    }
    case 'failed':
      return { text: `Failed: ${e.error}`, tone: 'bad' };
    case 'skipped':
      return { text: `Skipped: ${e.error}`, tone: 'none' };
    default:
      return { text: e.state, tone: 'none' };
  }
}

function show(id, { text, tone }) {
  const el = $(id);
  el.textContent = text;
  el.dataset.tone = tone;
}

export function renderNetworkCheck(check, phone) {
  const r = check.result;
  const running = r.state === 'running';
  $('netcheck-panel').hidden = !phone.loggedIn;
  $('netcheck-panel').setAttribute('aria-busy', String(running));
  const button = $('net-check');
  button.disabled = !check.canRun;
  button.textContent = running ? 'Checking…' : r.state === 'done' ? 'Check again' : 'Check my network';
  show('net-wss', describeWss(r.wss));
  for (const t of ['udp', 'tcp', 'tls']) show(`net-turn-${t}`, describeTransport(r.turn[t]));
  show('net-echo', describeEcho(r.echo));
  const verdict = $('net-verdict');
  if (r.verdict) {
    verdict.textContent = r.verdict.text;
    verdict.dataset.grade = r.verdict.grade;
  } else {
    verdict.textContent = running ? 'Checking your network…' : verdict.dataset.idle;
    verdict.dataset.grade = 'none';
  }
}

/** Wires the panel: the button runs the check; the panel follows the check and the phone. */
export function bindNetworkCheck(check, phone) {
  const verdict = $('net-verdict');
  verdict.dataset.idle = verdict.textContent;
  const draw = () => renderNetworkCheck(check, phone);
  check.addEventListener('change', draw);
  phone.addEventListener('change', draw);
  $('net-check').addEventListener('click', () => check.run());
  draw();
}
