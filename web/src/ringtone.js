// Ringtone synthesised with WebAudio: no audio file to fetch, nothing the CSP has to allow.
// A European-style double ring: 400+450 Hz, 0.4 s on, 0.2 s off, 0.4 s on, 2 s off.

export class Ringtone {
  constructor() {
    this.ctx = null;
    this.timer = null;
    this.nodes = [];
    this.sinkId = '';
  }

  // Browsers only let an AudioContext start after a user gesture; call this from one (login).
  unlock() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    if (!this.ctx) this.ctx = new Ctx();
    if (this.ctx.state === 'suspended') this.ctx.resume().catch(() => {});
    this.applySink();
  }

  setSinkId(id) {
    this.sinkId = id;
    this.applySink();
  }

  applySink() {
    if (this.ctx && typeof this.ctx.setSinkId === 'function') {
      this.ctx.setSinkId(this.sinkId).catch(() => {});
    }
  }

  get playing() {
    return this.timer !== null;
  }

  start() {
    if (this.playing) return;
    this.unlock();
    if (!this.ctx) return;
    const burst = () => {
      const t = this.ctx.currentTime;
      this.tone(t, 0.4);
      this.tone(t + 0.6, 0.4);
    };
    burst();
    this.timer = setInterval(burst, 3000);
  }

  tone(at, length) {
    const gain = this.ctx.createGain();
    gain.gain.setValueAtTime(0, at);
    gain.gain.linearRampToValueAtTime(0.15, at + 0.02);
    gain.gain.setValueAtTime(0.15, at + length - 0.02);
    gain.gain.linearRampToValueAtTime(0, at + length);
    gain.connect(this.ctx.destination);
    for (const freq of [400, 450]) {
      const osc = this.ctx.createOscillator();
      osc.frequency.value = freq;
      osc.connect(gain);
      osc.start(at);
      osc.stop(at + length);
      osc.onended = () => {
        osc.disconnect();
        this.nodes = this.nodes.filter((n) => n !== osc);
      };
      this.nodes.push(osc);
    }
  }

  stop() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    for (const osc of this.nodes) {
      try {
        osc.stop();
      } catch {
        // already stopped
      }
    }
    this.nodes = [];
  }
}
