// avatar-bridge web viewer: connects to the server's WebSocket (protocol v1), shows a procedural
// avatar built from the hello message (or a dropped .vrm), applies the newest frame once per render,
// draws the 2D keypoints, and reports connection state, fps and latency.

import * as THREE from 'three';
import { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';
import { Connection } from './connection.js';
import { KeypointPanel } from './keypoints.js';
import { ProceduralAvatar, loadVrm } from './avatars.js';

const $ = (id) => document.getElementById(id);

// ?ws=ws://host:port/ picks another server; ?token=... is passed on (servers bound beyond loopback need it).
function serverUrl() {
  const params = new URLSearchParams(location.search);
  let url = params.get('ws');
  if (!url) {
    const web = location.protocol === 'http:' || location.protocol === 'https:';
    url = web ? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/` : 'ws://127.0.0.1:8765/';
  }
  const token = params.get('token');
  if (token && !url.includes('token=')) url += `${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
  return url;
}

// --- scene -----------------------------------------------------------------------------------------
const canvas = $('view');
const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(window.devicePixelRatio || 1);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x1d2229);
// The avatar faces +Z, so a camera on +Z looking back sees its front (its left arm on screen right).
const camera = new THREE.PerspectiveCamera(35, 1, 0.05, 50);
camera.position.set(0, 1.1, 4.2);
camera.lookAt(0, 0.9, 0);
const orbit = new OrbitControls(camera, canvas); // drag to turn the view, wheel to zoom
orbit.target.set(0, 0.9, 0);
orbit.update();
scene.add(new THREE.HemisphereLight(0xffffff, 0x404048, 1.6));
const sun = new THREE.DirectionalLight(0xffffff, 1.8);
sun.position.set(1.5, 3, 2.5);
scene.add(sun);
const grid = new THREE.GridHelper(6, 12, 0x5a6270, 0x3a414c);
scene.add(grid);

function resize() {
  const w = canvas.clientWidth || window.innerWidth;
  const h = canvas.clientHeight || window.innerHeight;
  renderer.setSize(w, h, false);
  camera.aspect = w / Math.max(h, 1);
  camera.updateProjectionMatrix();
}
window.addEventListener('resize', resize);
resize();

// --- state -----------------------------------------------------------------------------------------
const panel = new KeypointPanel($('keypoints'));
const state = {
  connection: 'idle',
  connectionDetail: '',
  hello: null,
  framesReceived: 0,
  framesApplied: 0,
  lastFrame: null,
  lastAppliedSeq: null,
  pendingFrame: null,
  avatar: null,
  errors: [],
  frameTimes: [],
  latencyMs: null,
  rttMs: null,
  paused: false,
  renders: 0,
  waiting: 'waiting for stream: connecting', // shown (and the avatar hidden) until the first pose arrives
};

// Until the first pose is applied the avatar would stand in its rest T-pose as if tracked: hide it
// and say what the viewer is waiting for instead.
function waitingReason() {
  if (state.framesApplied > 0) return null;
  if (state.connection !== 'connected') return `waiting for stream: ${state.connection === 'idle' ? 'connecting' : state.connection}`;
  const f = state.lastFrame;
  if (!f) return 'waiting for stream...';
  if (!(f.people || []).length) return 'waiting for stream: nobody in view';
  return 'waiting for stream: calibrating (stand facing the camera)';
}

function updateWaiting() {
  const reason = waitingReason();
  state.waiting = reason;
  const el = $('waiting');
  el.hidden = reason == null;
  if (reason != null && el.textContent !== reason) el.textContent = reason;
  if (state.avatar) state.avatar.root.visible = reason == null;
}

function setAvatar(avatar) {
  if (state.avatar) {
    scene.remove(state.avatar.root);
    state.avatar.dispose();
  }
  state.avatar = avatar;
  avatar.root.visible = state.waiting == null; // hidden while waiting for the stream
  scene.add(avatar.root);
  $('avatar-name').textContent = avatar.name;
  if (state.lastFrame) state.pendingFrame = state.lastFrame; // show the current pose at once
}

function reportError(message) {
  state.errors.push(message);
  if (state.errors.length > 20) state.errors.shift();
  $('error').textContent = message;
  $('error').hidden = false;
}

function drivingPerson(frame) {
  const people = frame.people || [];
  const wanted = frame.driver ?? null;
  return people.find((p) => p.id === wanted) || people[0] || null;
}

function onHello(msg) {
  if (msg.protocol !== 'avatar-bridge' || msg.version !== 1) {
    reportError(`server speaks ${msg.protocol} version ${msg.version}; this viewer needs avatar-bridge version 1 - update the viewer or the server`);
    return;
  }
  const first = state.hello === null;
  state.hello = msg;
  panel.setEdges(msg.skeleton_edges);
  if (!state.avatar || state.avatar.kind === 'procedural') {
    try {
      setAvatar(new ProceduralAvatar(msg.bones));
    } catch (err) {
      reportError(err.message);
    }
  }
  if (first) {  // the VRM chosen on an earlier visit, if any
    savedVrm()
      .then((saved) => (saved && state.avatar?.kind === 'procedural' ? loadVrmFile(saved.buffer, saved.name, false) : null))
      .catch(() => {});
  }
}

function onFrame(msg) {
  state.framesReceived += 1;
  state.lastFrame = msg;
  state.pendingFrame = msg;
  const now = performance.now();
  state.frameTimes.push(now);
  while (state.frameTimes.length && now - state.frameTimes[0] > 1000) state.frameTimes.shift();
  if (typeof msg.latency_ms === 'number') state.latencyMs = msg.latency_ms;
}

const connection = new Connection(serverUrl(), {
  onMessage(msg) {
    switch (msg.type) {
      case 'hello': onHello(msg); break;
      case 'frame': onFrame(msg); break;
      case 'pong':
        if (typeof msg.nonce === 'string' && msg.nonce.startsWith('t')) {
          state.rttMs = performance.now() - Number(msg.nonce.slice(1));
        }
        break;
      case 'ack': break;
      case 'error': reportError(`server: ${msg.message}`); break;
      default: break; // unknown types are ignored so newer servers stay compatible
    }
  },
  onState(name, detail) {
    state.connection = name;
    state.connectionDetail = detail;
    const el = $('connection');
    el.textContent = `${name}${detail ? ` (${detail.replace(/\?.*$/, '')})` : ''}`;
    el.className = `state-${name}`;
  },
});
connection.open();
setInterval(() => connection.send({ type: 'ping', nonce: `t${performance.now()}` }), 2000);

// --- controls --------------------------------------------------------------------------------------
$('calibrate').addEventListener('click', () => connection.send({ type: 'calibrate' }));
$('pause').addEventListener('click', () => {
  state.paused = !state.paused;
  connection.send({ type: 'pause', paused: state.paused });
  $('pause').textContent = state.paused ? 'Resume' : 'Pause';
});
$('person').addEventListener('change', (e) => {
  const id = Number(e.target.value);
  if (Number.isInteger(id)) connection.send({ type: 'select', id });
});
$('default-avatar').addEventListener('click', async () => {
  await forgetVrm().catch(() => {});  // forgotten before the switch shows, so a reload right after keeps the default
  if (state.hello) setAvatar(new ProceduralAvatar(state.hello.bones));
});

// --- the chosen VRM, kept between visits ------------------------------------------------------------
// A VRM the user loads is stored in this browser's IndexedDB and loaded again when the page reloads
// (an OBS browser source reloads it, and no file can be dropped on it); *Default avatar* forgets it.
const SAVED = { db: 'avatar-bridge-viewer', store: 'avatar', key: 'vrm' };

function savedStore(mode, use) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(SAVED.db, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(SAVED.store);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const tx = open.result.transaction(SAVED.store, mode);
      const request = use(tx.objectStore(SAVED.store));
      tx.oncomplete = () => { open.result.close(); resolve(request?.result); };
      tx.onerror = () => { open.result.close(); reject(tx.error); };
    };
  });
}
const saveVrm = (buffer, name) => savedStore('readwrite', (s) => s.put({ buffer, name }, SAVED.key));
const savedVrm = () => savedStore('readonly', (s) => s.get(SAVED.key));
const forgetVrm = () => savedStore('readwrite', (s) => s.delete(SAVED.key));

async function loadVrmFile(buffer, name, remember = true) {
  $('avatar-name').textContent = `loading ${name}...`;
  try {
    const avatar = await loadVrm(buffer.slice(0), name, state.hello?.bones);
    if (remember) {  // kept before it is shown, so a reload right after showing it finds it
      await saveVrm(buffer, name).catch((err) => console.warn(`could not keep ${name} for the next visit: ${err}`));
    }
    setAvatar(avatar);
    $('error').hidden = true;
    return avatar.kind;
  } catch (err) {
    reportError(err.message);
    $('avatar-name').textContent = state.avatar ? state.avatar.name : 'none';
    throw err;
  }
}

async function loadFile(file) {
  if (!file.name.toLowerCase().endsWith('.vrm')) {
    reportError(`${file.name}: drop a .vrm file (VRM 0.x or 1.0)`);
    return;
  }
  await loadVrmFile(await file.arrayBuffer(), file.name).catch(() => {});
}

$('vrm-file').addEventListener('change', (e) => {
  if (e.target.files[0]) loadFile(e.target.files[0]);
});
window.addEventListener('dragover', (e) => {
  e.preventDefault();
  document.body.classList.add('dragging');
});
window.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
window.addEventListener('drop', (e) => {
  e.preventDefault();
  document.body.classList.remove('dragging');
  const file = e.dataTransfer?.files?.[0];
  if (file) loadFile(file);
});

// --- render loop -----------------------------------------------------------------------------------
function updatePeopleList(frame) {
  const select = $('person');
  const people = frame.people || [];
  const key = people.map((p) => `${p.id}${p.tracking ? '' : '?'}`).join(',');
  if (select.dataset.key !== key) {
    select.dataset.key = key;
    // "lost": the tracker only extrapolates this person for now.
    select.replaceChildren(...people.map((p) => new Option(`person ${p.id}${p.tracking ? '' : ' (lost)'}`, String(p.id))));
  }
  if (frame.driver != null) select.value = String(frame.driver);
}

function updateHud() {
  $('fps').textContent = `${state.frameTimes.length}`;
  $('latency').textContent = state.latencyMs == null ? '-' : `${state.latencyMs.toFixed(0)} ms`;
  $('rtt').textContent = state.rttMs == null ? '-' : `${state.rttMs.toFixed(0)} ms`;
  const f = state.lastFrame;
  $('people').textContent = f ? `${(f.people || []).length}` : '-';
  $('seq').textContent = f ? `${f.seq}` : '-';
}

const clock = new THREE.Clock();
function tick() {
  const dt = clock.getDelta();
  const frame = state.pendingFrame;
  if (frame && state.avatar) {
    state.pendingFrame = null;
    const person = drivingPerson(frame);
    // A person without a solved rig yet (e.g. before calibration) leaves the avatar as it was.
    if (person && person.pose && Object.keys(person.pose).length > 0) {
      state.avatar.apply(person);
      state.framesApplied += 1;
      state.lastAppliedSeq = frame.seq;
    }
    panel.draw(frame);
    updatePeopleList(frame);
  }
  updateWaiting();
  state.avatar?.update(dt);
  renderer.render(scene, camera);
  state.renders += 1;
  updateHud();
  requestAnimationFrame(tick);
}
requestAnimationFrame(tick);

// --- test hook -------------------------------------------------------------------------------------
// Read-only views of what the page received and what it actually put on the avatar's bone objects.
window.avatarBridge = {
  get connection() { return state.connection; },
  get connects() { return connection.connects; },
  get framesReceived() { return state.framesReceived; },
  get framesApplied() { return state.framesApplied; },
  get renders() { return state.renders; },
  /** The "waiting for stream" text on screen, or null once a pose is shown. */
  get waiting() { return state.waiting; },
  get avatarVisible() { return state.avatar ? state.avatar.root.visible : false; },
  get rttMs() { return state.rttMs; },
  get lastFrame() { return state.lastFrame; },
  get lastAppliedSeq() { return state.lastAppliedSeq; },
  get hello() { return state.hello; },
  get avatarKind() { return state.avatar ? state.avatar.kind : null; },
  get avatarName() { return state.avatar ? state.avatar.name : null; },
  get errors() { return state.errors.slice(); },
  appliedRotation(bone) { return state.avatar ? state.avatar.appliedRotation(bone) : null; },
  appliedHipsPosition() { return state.avatar ? state.avatar.appliedHipsPosition() : null; },
  /** Everything applied by the last render, read back in one go (consistent: JS is single-threaded). */
  appliedPose(bones) {
    const rotations = {};
    for (const b of bones) rotations[b] = this.appliedRotation(b);
    return { seq: state.lastAppliedSeq, hips: this.appliedHipsPosition(), rotations };
  },
  rawBoneWorldPosition(bone) { return state.avatar?.rawBoneWorldPosition?.(bone) ?? null; },
  loadVrmFromUrl: async (url) => loadVrmFile(await (await fetch(url)).arrayBuffer(), url),
  send: (msg) => connection.send(msg),
};
