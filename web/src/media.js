// Microphone constraints and audio device lists.

/**
 * getUserMedia audio constraints. `raw` switches off the browser's voice processing, which
 * squashes a steady test tone; tests ask for it with ?raw-audio=1.
 */
export function audioConstraints({ deviceId = '', raw = false } = {}) {
  const audio = {};
  if (deviceId) audio.deviceId = { exact: deviceId };
  if (raw) {
    audio.echoCancellation = false;
    audio.noiseSuppression = false;
    audio.autoGainControl = false;
  }
  return Object.keys(audio).length ? { audio, video: false } : { audio: true, video: false };
}

export async function listAudioDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) {
    return { inputs: [], outputs: [] };
  }
  const devices = await navigator.mediaDevices.enumerateDevices();
  return {
    inputs: devices.filter((d) => d.kind === 'audioinput'),
    outputs: devices.filter((d) => d.kind === 'audiooutput'),
  };
}

export function canPickOutput() {
  return typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;
}
