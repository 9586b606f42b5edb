// Types of tbone.js, the browser client for tbone subscribe endpoints (docs/client.md).
//
//   import { connect } from "tbone-asgi-client";
//   const client = connect("/ws", { events: ["item_create"] });
//   client.on<Item>("item_create", (item, event) => console.log(event.id, item.name));

/** One event as the server sends it: the payload of an `event` frame. */
export interface TBoneEvent<T = unknown> {
  name: string;
  data: T;
  /** Ordered within its channel; the client resumes after the last one it saw. */
  id: string;
  channel: string;
}

/** Called for each event of a name, in the channel's order; its return value is ignored. */
export type EventHandler<T = unknown> = (data: T, event: TBoneEvent<T>) => void;

/** `idle` until `connect()`; `failed` after a refusal (not retried); `closed` after `close()`. */
export type ClientState = "idle" | "connecting" | "open" | "reconnecting" | "closed" | "failed";

/** What `onState` handlers get on every change of state. */
export interface StateChange {
  state: ClientState;
  /** Failed attempts in a row. */
  attempt: number;
  /** `reconnecting` after a close: ms before the next attempt. */
  delay?: number;
  /** The close code: `closed`, `failed` after a refusal, `reconnecting` after a close. */
  code?: number;
  /** The close reason of a refusal, or of a `bad_since` close. */
  reason?: string;
  /** `failed` because the WebSocket constructor threw (a bad URL): its message. */
  error?: string;
}

/**
 * The end of a resume: every missed event the server held came before it, however many.
 * `complete: false` means only that events were lost (history did not reach back).
 */
export interface Recovery {
  /** null when the server could not read the id at all (`bad_since`). */
  channel: string | null;
  complete: boolean;
  /** The id the resume started after. */
  since: string | null | undefined;
}

/** An `error` frame from the server (docs/protocol.md); the connection stays open. */
export interface ErrorFrame {
  code: string;
  message: string;
}

/** Reconnect delays in ms: doubled per failed attempt up to `max`, with full jitter. */
export interface Backoff {
  initial: number;
  max: number;
}

// A handler whose parameter is compared both ways, so the DOM's WebSocket (whose handlers
// take an Event, a MessageEvent, a CloseEvent) is a WebSocketLike.
type SocketHandler<E> = { bivariant(event: E): void }["bivariant"];

/** What the client uses of a websocket: the browser's `WebSocket`, or a stand-in. */
export interface WebSocketLike {
  /** 1 when open. */
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: SocketHandler<unknown> | null;
  onmessage: SocketHandler<{ data: string }> | null;
  onclose: SocketHandler<{ code: number; reason: string }> | null;
}

/** The `WebSocket` option: called with `new` and the URL of each connection. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Options of `connect()` and `new TBoneClient()`; every one has a default. */
export interface TBoneOptions {
  /** Event names to subscribe to; `[]` (the default) takes the route's own events. */
  events?: readonly string[];
  /** Resume after this id from the first connection (default: null). */
  since?: string | null;
  /** Default `{ initial: 500, max: 10000 }`; either key may be left out. */
  backoff?: Partial<Backoff>;
  /** ms between heartbeat pings while open (default 25000). */
  pingInterval?: number;
  /** ms without any frame after a ping before the connection is taken as dead (default 10000). */
  pongTimeout?: number;
  /** The constructor to use (default `globalThis.WebSocket`). */
  WebSocket?: WebSocketConstructor;
}

/** The options in effect: the defaults with the given ones over them. */
export interface ResolvedOptions extends Required<Omit<TBoneOptions, "backoff" | "since">> {
  since: string | null | undefined;
  backoff: Backoff;
}

/** A `subscribe()` the server refused: none of `events` was subscribed. */
export class SubscribeError extends Error {
  constructor(events: string[], error: ErrorFrame);
  name: string;
  events: string[];
  /** The error frame's code, e.g. `forbidden` or `not_offered`. */
  code: string;
}

/**
 * Resolve "/ws" or "ws" against `base` (the page): http becomes ws, https becomes wss.
 * Throws a TypeError for a URL that is not a websocket one.
 */
export function websocketURL(url: string | URL, base?: string | URL): URL;

export class TBoneClient {
  /** Throws a TypeError for an event name the protocol does not allow. Does not connect. */
  constructor(url: string | URL, options?: TBoneOptions);

  /** The websocket URL, without the `events` and `since` of each connection. */
  url: URL;
  /** The event names asked for at each connection. */
  events: string[];
  /** The id of the last event seen: the next connection resumes after it. */
  lastId: string | null | undefined;
  options: ResolvedOptions;
  state: ClientState;
  /** Failed attempts in a row. */
  attempt: number;
  /** Every resume's end, in order. */
  recoveries: Recovery[];

  /** Call `fn(data, event)` for every event named `name` ("*": every event). Returns an "off". */
  on<T = unknown>(name: string, fn: EventHandler<T>): () => void;
  off<T = unknown>(name: string, fn: EventHandler<T>): void;
  /** Returns a function that removes `fn` (true if it was still there). */
  onState(fn: (change: StateChange) => void): () => boolean;
  /** When a resume ends. Returns a function that removes `fn`. */
  onRecovered(fn: (recovery: Recovery) => void): () => boolean;
  /** For each error frame from the server. Returns a function that removes `fn`. */
  onError(fn: (error: ErrorFrame) => void): () => boolean;

  /**
   * Add events (also asked for after every reconnect). Connected: settles with the server's
   * answer, rejecting with a SubscribeError (keeping none of them) when it refuses.
   * Not connected: resolves at once. Throws a TypeError for a name the protocol does not allow.
   */
  subscribe(events: readonly string[]): Promise<void>;
  /** Stop receiving events; settles with the server's answer. */
  unsubscribe(events: readonly string[]): Promise<void>;
  /**
   * The round trip in ms. Once it resolves every earlier subscribe() is in effect. Rejects
   * when not connected, when the connection drops, or after `timeout` ms (default pongTimeout).
   */
  ping(timeout?: number): Promise<number>;

  /** The URL of the next connection: events and, to resume, since in the query. */
  connectURL(): string;
  /**
   * Connect now: at first, during a reconnect's wait, or again after close(); nothing more
   * while a connection exists. Throws what the WebSocket constructor throws (state `failed`).
   */
  connect(): this;
  /** Close for good: no reconnect until connect() is called again. */
  close(code?: number, reason?: string): void;
  /** Drop the current connection and reconnect at once, resuming. */
  reconnect(): void;
}

/** Make a client and connect it. */
export function connect(url: string | URL, options?: TBoneOptions): TBoneClient;
