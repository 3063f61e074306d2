// WebSocket connection to the avatar-bridge server that reconnects with exponential backoff, so a
// viewer left open survives server restarts without a page reload.

const MIN_DELAY_S = 0.5;
const MAX_DELAY_S = 8;

export class Connection {
  /**
   * @param {string} url ws:// address of the server
   * @param {{onMessage: (msg: object) => void, onState: (state: string, detail: string) => void}} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.delay = MIN_DELAY_S;
    this.socket = null;
    this.timer = null;
    this.connects = 0;
    this.closedByUser = false;
  }

  open() {
    this.closedByUser = false;
    this.handlers.onState('connecting', this.url);
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (err) {
      this.handlers.onState('error', `bad server address ${this.url}: ${err.message}`);
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.delay = MIN_DELAY_S;
      this.connects += 1;
      this.handlers.onState('connected', this.url);
    };
    socket.onmessage = (event) => {
      if (typeof event.data !== 'string') return; // protocol v1 is JSON text only
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        this.handlers.onState('protocol-error', `server sent invalid JSON: ${err.message}`);
        return;
      }
      this.handlers.onMessage(msg);
    };
    socket.onclose = () => {
      this.socket = null;
      if (this.closedByUser) {
        this.handlers.onState('closed', this.url);
        return;
      }
      const wait = this.delay;
      this.delay = Math.min(this.delay * 2, MAX_DELAY_S);
      this.handlers.onState('reconnecting', `retry in ${wait.toFixed(1)} s`);
      this.timer = setTimeout(() => this.open(), wait * 1000);
    };
  }

  send(msg) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(msg));
    return true;
  }

  close() {
    this.closedByUser = true;
    clearTimeout(this.timer);
    this.socket?.close();
  }
}
