// tbone.js: a dependency-free browser client for tbone subscribe endpoints (an ES module).
//
//   import { connect } from "/static/tbone/tbone.js";
//   const client = connect("/ws", { events: ["resource_create"] });
//   client.on("resource_create", (data, event) => console.log(event.id, data));
//
// The rules (docs/client.md has the long form; the Python client follows the same ones):
// - Events reach handlers in the order the server sends them (the channel's order), once each.
// - When the connection drops, the client reconnects with exponential backoff and full
//   jitter, and asks for every event after the last id it saw (?since=<id>). The server sends
//   every missed event it holds, in order, however many (paced by the client's reading), then
//   a "recovered" frame; complete: false means only that events were lost (its history did
//   not reach back). onRecovered handlers get { channel, complete, since }.
// - A close with a policy code (1002, 1003, 1007, 1008, 1009, 1010, 4000-4999) is a refusal:
//   the client stops (state "failed") instead of retrying.
// - Every `pingInterval` ms the client sends {"type":"ping"}; if nothing at all arrives within
//   `pongTimeout` ms after it, the connection is taken as dead, closed and reconnected
//   (browsers do not expose websocket-level pings to scripts).

const REFUSING_CLOSE_CODES = new Set([1002, 1003, 1007, 1008, 1009, 1010]);

const DEFAULTS = {
  events: [],
  since: null,
  backoff: { initial: 500, max: 10000 },
  pingInterval: 25000,
  pongTimeout: 10000,
  WebSocket: globalThis.WebSocket,
};

// The protocol's rule for event names, checked here so a bad name fails at once instead of
// being refused by the server at every reconnect.
const EVENT_NAME = /^[A-Za-z0-9_.:-]{1,200}$/;

function checkEvents(events) {
  if (typeof events === "string") {
    throw new TypeError(`events must be an array of names, not the string "${events}": ["${events}"]`);
  }
  const names = Array.from(events || []);
  for (const name of names) {
    if (typeof name !== "string" || !EVENT_NAME.test(name)) {
      throw new TypeError(`bad event name ${JSON.stringify(name)}: names are 1 to 200 characters of A-Z a-z 0-9 _ . : -`);
    }
  }
  return names;
}

// A subscribe() the server refused: `events` were not subscribed (all or nothing).
export class SubscribeError extends Error {
  constructor(events, error) {
    super(`subscribing to ${events.join(", ")} was refused: ${error.code}: ${error.message}`);
    this.name = "SubscribeError";
    this.events = events;
    this.code = error.code;
  }
}

// Resolve "/ws" or "ws" against the page: http -> ws, https -> wss.
export function websocketURL(url, base = globalThis.location?.href) {
  const resolved = new URL(url, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  else if (resolved.protocol === "https:") resolved.protocol = "wss:";
  if (resolved.protocol !== "ws:" && resolved.protocol !== "wss:") {
    throw new TypeError(`${url} is not a websocket URL: use ws://, wss:// or a path like /ws`);
  }
  return resolved;
}

export class TBoneClient {
  constructor(url, options = {}) {
    const opts = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...options.backoff } };
    this.url = websocketURL(url);
    this.events = checkEvents(opts.events);
    this.lastId = opts.since;
    this.options = opts;
    this.state = "idle"; // idle, connecting, open, reconnecting, closed, failed
    this.attempt = 0; // failed attempts in a row
    this.recoveries = [];
    this._handlers = new Map(); // event name (or "*") -> Set of functions
    this._hooks = { state: new Set(), recovered: new Set(), error: new Set() };
    this._ws = null;
    this._retryTimer = null;
    this._healthy = null; // timer: the open connection has lasted long enough to count
    this._pingTimer = null;
    this._deadTimer = null;
    this._stopped = false;
    // ping, subscribe and unsubscribe run one at a time: each sends its frame and a ping, and
    // an error frame that arrives before the pong answers that frame.
    this._chain = Promise.resolve();
    this._pending = null; // { resolve, reject, errors, strict, timer }
    this._stalePongs = 0; // pongs due that answer no pending call (heartbeats, timeouts)
  }

  // -- handlers ------------------------------------------------------------------------------

  // Call fn(data, event) for every event named `name` ("*": every event). Returns an "off".
  on(name, fn) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) {
    this._handlers.get(name)?.delete(fn);
  }

  // fn({ state, attempt, delay, code }) on every change of state.
  onState(fn) {
    return this._hook("state", fn);
  }

  // fn({ channel, complete, since }) when a resume ends.
  onRecovered(fn) {
    return this._hook("recovered", fn);
  }

  // fn({ code, message }) for each error frame from the server (the connection stays open).
  onError(fn) {
    return this._hook("error", fn);
  }

  _hook(kind, fn) {
    this._hooks[kind].add(fn);
    return () => this._hooks[kind].delete(fn);
  }

  _emit(kind, value) {
    for (const fn of [...this._hooks[kind]]) {
      try {
        fn(value);
      } catch (err) {
        console.error(`tbone: ${kind} handler failed`, err);
      }
    }
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit("state", { state, attempt: this.attempt, ...extra });
  }

  // -- subscriptions -------------------------------------------------------------------------

  // Add events (also asked for after every reconnect). Returns a Promise: when connected it
  // settles with the server's answer, rejecting with a SubscribeError (and keeping none of
  // the events) when the server refuses them; when not connected it resolves at once and the
  // next connection asks for them. Throws a TypeError for a name the protocol does not allow.
  subscribe(events) {
    const names = checkEvents(events).filter((n) => !this.events.includes(n));
    if (!names.length) return Promise.resolve();
    this.events.push(...names);
    return this._acknowledged({ type: "subscribe", payload: { events: names } }).then((errors) => {
      if (errors.length) {
        this.events = this.events.filter((n) => !names.includes(n));
        throw new SubscribeError(names, errors[0]);
      }
    });
  }

  // Stop receiving events. Returns a Promise settled with the server's answer.
  unsubscribe(events) {
    const names = checkEvents(events).filter((n) => this.events.includes(n));
    if (!names.length) return Promise.resolve();
    this.events = this.events.filter((n) => !names.includes(n));
    return this._acknowledged({ type: "unsubscribe", payload: { events: names } }).then(() => {});
  }

  // Send a ping; resolves with the round trip in ms when the pong arrives. The server answers
  // in order, so a resolved ping also means every earlier subscribe() is in effect. Rejects
  // when not connected, when the connection drops, or after `timeout` ms.
  ping(timeout = this.options.pongTimeout) {
    const started = performance.now();
    return this._acknowledged(null, timeout, true).then(() => performance.now() - started);
  }

  // Send `frame` then a ping, one call at a time; resolve with the error frames received
  // before the pong. Without a connection (or if it drops) resolve with [] unless `strict`.
  _acknowledged(frame, timeout = this.options.pongTimeout, strict = false) {
    const run = this._chain.then(
      () =>
        new Promise((resolve, reject) => {
          const ws = this._ws;
          if (!ws || ws.readyState !== 1) {
            if (strict) reject(new Error("tbone: not connected"));
            else resolve([]);
            return;
          }
          const pending = { resolve, reject, errors: [], strict };
          pending.timer = setTimeout(() => {
            this._pending = null;
            this._stalePongs += 1; // its pong may still come: it must not answer the next
            reject(new Error(`tbone: no answer within ${timeout} ms`));
          }, timeout);
          this._pending = pending;
          if (frame) ws.send(JSON.stringify(frame));
          ws.send(JSON.stringify({ type: "ping" }));
        }),
    );
    this._chain = run.catch(() => {}); // one failure must not block the calls after it
    return run;
  }

  _settle(lost) {
    const pending = this._pending;
    if (!pending) return;
    this._pending = null;
    clearTimeout(pending.timer);
    if (!lost) pending.resolve(pending.errors);
    else if (pending.strict) pending.reject(new Error("tbone: connection closed"));
    else pending.resolve([]);
  }

  // -- connection ----------------------------------------------------------------------------

  // The URL of the next connection: events and, to resume, since in the query.
  connectURL() {
    const url = new URL(this.url);
    url.searchParams.delete("events");
    url.searchParams.delete("since");
    if (this.events.length) url.searchParams.set("events", this.events.join(","));
    if (this.lastId !== null && this.lastId !== undefined) url.searchParams.set("since", this.lastId);
    return url.toString().replaceAll("%2C", ","); // commas read better in server logs
  }

  connect() {
    this._stopped = false;
    clearTimeout(this._retryTimer);
    if (this._ws) return this;
    const resumedFrom = this.lastId;
    const asked = [...this.events]; // what the URL asks for; later changes are sent on open
    this._setState(this.attempt ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new this.options.WebSocket(this.connectURL());
    } catch (err) {
      this._setState("failed", { error: String(err) });
      throw err;
    }
    this._ws = ws;
    this._badSince = false;
    ws.onopen = () => {
      // The backoff starts afresh only once this connection has worked: it brought an event
      // or a finished resume, or stayed up for backoff.max. A server that accepts and closes
      // at once (say, with 1013 while it replays a backlog) must not get a reconnect storm.
      this._healthy = setTimeout(() => this._worked(), this.options.backoff.max);
      // subscribe()/unsubscribe() calls made during the handshake missed the URL.
      const added = this.events.filter((n) => !asked.includes(n));
      const removed = asked.filter((n) => !this.events.includes(n));
      if (added.length) this._send({ type: "subscribe", payload: { events: added } });
      if (removed.length) this._send({ type: "unsubscribe", payload: { events: removed } });
      this._setState("open");
      this._startPing();
    };
    ws.onmessage = (message) => this._receive(message.data, resumedFrom);
    ws.onclose = (close) => this._closed(ws, close.code, close.reason);
    return this;
  }

  // Close for good: no reconnect until connect() is called again.
  close(code = 1000, reason = "") {
    this._stopped = true;
    clearTimeout(this._retryTimer);
    clearTimeout(this._healthy);
    this._stopPing();
    this._settle(true); // a pending ping() or subscribe() learns the connection is gone
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(code, reason);
    this._setState("closed", { code });
  }

  // Drop the current connection and reconnect (as if it had failed).
  reconnect() {
    this._drop("reconnect");
  }

  _send(frame) {
    const ws = this._ws;
    // When not open, the reconnect puts events in its URL: nothing to queue.
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(frame));
  }

  _receive(text, resumedFrom) {
    this._alive();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      console.warn("tbone: ignoring a frame that is not JSON", text);
      return;
    }
    const payload = frame && frame.payload;
    switch (frame && frame.type) {
      case "event":
        if (payload && typeof payload === "object") this._dispatch(payload);
        break;
      case "recovered": {
        const rec = { channel: payload.channel, complete: !!payload.complete, since: resumedFrom };
        this.recoveries.push(rec);
        this._worked();
        if (!rec.complete) console.warn("tbone: history did not reach back; events were lost", rec);
        this._emit("recovered", rec);
        break;
      }
      case "error":
        console.warn("tbone: server error frame", payload);
        if (payload && payload.code === "bad_since") this._badSince = true;
        if (this._pending) this._pending.errors.push(payload);
        this._emit("error", payload);
        break;
      case "pong":
        if (this._stalePongs) this._stalePongs -= 1;
        else this._settle(false);
        break;
      default:
        console.warn("tbone: ignoring an unknown frame", frame);
    }
  }

  _worked() {
    clearTimeout(this._healthy);
    this.attempt = 0;
  }

  _dispatch(event) {
    this.lastId = event.id; // seen: a reconnect resumes after it
    this._worked();
    const named = this._handlers.get(event.name) || [];
    const every = this._handlers.get("*") || [];
    for (const fn of [...named, ...every]) {
      try {
        fn(event.data, event);
      } catch (err) {
        // One broken handler must not stop the others or the connection.
        console.error(`tbone: handler for ${event.name} failed`, err);
      }
    }
  }

  _closed(ws, code, reason) {
    if (ws !== this._ws) return; // an old socket closing late
    this._ws = null;
    clearTimeout(this._healthy);
    this._stopPing();
    this._stalePongs = 0;
    this._settle(true);
    if (this._stopped) return;
    if (code === 1008 && this._badSince && this.lastId != null) {
      // The server cannot read our id (another backend, or a bad `since` option): history
      // cannot be checked, so say so and start again from the current events.
      const rec = { channel: null, complete: false, since: this.lastId };
      this.recoveries.push(rec);
      this._emit("recovered", rec);
      this.lastId = null;
      this._setState("reconnecting", { delay: 0, code, reason });
      this._retryTimer = setTimeout(() => this.connect(), 0);
      return;
    }
    if (REFUSING_CLOSE_CODES.has(code) || (code >= 4000 && code <= 4999)) {
      this._setState("failed", { code, reason });
      return;
    }
    // Full jitter: many pages that lost the same server do not come back in step.
    const { initial, max } = this.options.backoff;
    const ceiling = Math.min(max, initial * 2 ** this.attempt);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.attempt += 1;
    this._setState("reconnecting", { delay, code });
    this._retryTimer = setTimeout(() => this.connect(), delay);
  }

  // -- heartbeat -----------------------------------------------------------------------------

  _startPing() {
    this._stopPing();
    this._pingTimer = setInterval(() => {
      this._stalePongs += 1; // this pong answers no ping() call
      this._send({ type: "ping" });
      if (!this._deadTimer) {
        this._deadTimer = setTimeout(() => this._dead(), this.options.pongTimeout);
      }
    }, this.options.pingInterval);
  }

  _alive() {
    clearTimeout(this._deadTimer);
    this._deadTimer = null;
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    this._alive();
    this._pingTimer = null;
  }

  _dead() {
    this._deadTimer = null;
    console.warn("tbone: no answer to ping; reconnecting");
    this._drop("no pong");
  }

  // Give up on the current socket and schedule a reconnect at once: its close handshake may
  // never finish on a dead connection, so we do not wait for its onclose.
  _drop(reason) {
    const ws = this._ws;
    if (!ws) return;
    this._closed(ws, 1006, reason);
    ws.close(1000, reason);
  }
}

// Make a client and connect it.
export function connect(url, options = {}) {
  return new TBoneClient(url, options).connect();
}
