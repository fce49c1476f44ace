/** What `send` accepts: text, bytes, or any JSON-serialisable value (sent as JSON text). */
export type SendData = string | Uint8Array | ArrayBuffer | ArrayBufferView | unknown;

/** A received payload: text frames as strings, binary as bytes. */
export type MessageData = string | Uint8Array;

/** A store written in JavaScript (a file in Node.js, React Native storage, a test double). */
export interface StoreObject {
  /** Everything stored, for a starting client. */
  load(): Promise<{ session?: Uint8Array | null; messages: Array<[number, Uint8Array]> }>;
  /** Apply `ops` in order, all or nothing; resolve once they are as durable as `durable` says. */
  apply(ops: StoreOp[]): Promise<void>;
  /** True when what `apply` resolved survives a restart (receipts then say `durable`). */
  durable?: boolean;
}

export type StoreOp =
  | { op: "session"; value: Uint8Array }
  | { op: "put"; seq: number; value: Uint8Array }
  | { op: "delete"; seq: number }
  | { op: "clear" };

export interface SteadfastOptions {
  /** "auto" (default): reliable when the server speaks steadfast.v1; "on": required; "off": plain WebSocket. */
  reliable?: "auto" | "on" | "off" | boolean;
  /** Where the outbox lives: "indexeddb" (default in browsers; memory where unavailable, with a `warning`), "memory", or a store object. */
  persist?: "indexeddb" | "memory" | StoreObject;
  /** The IndexedDB database name (default: "steadfast " + url). */
  name?: string;
  /** Extra subprotocols, offered after steadfast.v1. */
  protocols?: string[];
  /** Messages above this many bytes are sent in chunks (reliable mode; default 32 KiB). */
  chunkSize?: number;
  /** Bytes the socket may buffer unsent (`bufferedAmount`, default 1 MiB); above it, messages wait in the outbox until it drains below half. */
  sendBuffer?: number;
  /** Give up on a connect attempt after this long. */
  connectTimeoutMs?: number;
  /** Reconnect timing (full jitter between attempts). */
  backoff?: {
    /** Bound of the first retry's delay (default 500). */
    initialMs?: number;
    /** Cap of the delay (default 1000): a server back from an outage finds its clients within about this. */
    maxMs?: number;
    /** For this long into an outage retries stay within maxMs (default 30000); then the cap doubles up to slowMaxMs. */
    fastPhaseMs?: number;
    /** The cap once an outage outlasted fastPhaseMs (default 30000). */
    slowMaxMs?: number;
    /** Delay before the single fast retry after a healthy connection dropped. */
    fastRetryMs?: number;
    /** A connection open this long resets the backoff. */
    healthyAfterMs?: number;
  };
  /** Outbox bounds. */
  queue?: {
    maxMessages?: number;
    maxBytes?: number;
    /** Messages not acknowledged within this time fail with ERR_EXPIRED. */
    ttlMs?: number;
    /** Payload bytes sent and not yet acknowledged before sending waits (default 1 MiB; a steadfast server's announced receive window caps it). */
    maxInFlightBytes?: number;
  };
  /** What `send` does when the outbox is full: wait for room (default), reject with ERR_QUEUE_FULL, or drop the oldest (its promise rejects with ERR_DROPPED). */
  overflow?: "wait" | "reject" | "dropOldest";
  /** Receive limits. */
  limits?: {
    maxMessageSize?: number;
    reorderWindow?: number;
    maxBufferedBytes?: number;
    maxPartialMessages?: number;
    maxPartialAgeMs?: number;
    gapTimeoutMs?: number;
    handshakeTimeoutMs?: number;
  };
  /** ACK coalescing. */
  ack?: { delayMs?: number; every?: number; everyBytes?: number };
  /** Application-level heartbeat (false turns it off). */
  heartbeat?: false | { intervalMs?: number; idleMs?: number; probeTimeoutMs?: number };
  /** Seed of the reconnect jitter (tests). */
  seed?: number;
  /** A WebSocket constructor for runtimes without a global one (Node.js before 22: the `ws` package's). */
  WebSocket?: unknown;
  /** Called before every (re)connect; returns the token. A refused token gets one refresh, then the client stops (no loop). */
  auth?: () => string | Promise<string>;
  /** The query parameter the token goes in (default "token"). */
  authQuery?: string;
  /** Send the token as a subprotocol with this prefix instead (e.g. "bearer."). */
  authProtocol?: string;
}

export type ConnectionState =
  | { state: "idle" }
  | { state: "connecting"; attempt: number }
  | { state: "open"; mode: "reliable" | "plain" }
  | {
      state: "reconnecting";
      attempt: number;
      /** Milliseconds from the state change to the next attempt. */
      retryInMs: number;
      /** When the next attempt is due (ms since the Unix epoch, like Date.now()). */
      nextRetryAt: number;
      reason: "closed" | "connect-timeout" | "dead-peer" | "protocol-error" | "requested";
      code?: number;
      closeReason?: string;
    }
  | { state: "suspended"; reason: "offline" | "awaiting-auth" }
  | {
      state: "closed";
      reason: "closed" | "rejected" | "auth-failed" | "subprotocol-refused" | "failed";
      code?: number;
      closeReason?: string;
    };

export type StateName = ConnectionState["state"];

export interface SendResult {
  /** The message's number, unique within this client. */
  id: number;
  /** True: the server acknowledged it (reliable). False: handed to the socket (plain mode). */
  acked: boolean;
  /** It was in a durable store when queued. */
  durable: boolean;
}

export interface SendOptions {
  /** Called once the message is in the outbox (committed, with a durable store). */
  onQueued?: (id: number, durable: boolean) => void;
}

export interface Stats {
  queued: number;
  queuedBytes: number;
  waitingSends: number;
  durable: boolean;
  connects: number;
  resumes: number;
  resyncs: number;
  resends: number;
  duplicates: number;
  messagesIn: number;
  messagesOut: number;
  rttMs: number | null;
}

export type ErrorCode =
  | "ERR_INVALID_URL"
  | "ERR_INVALID_OPTION"
  | "ERR_INVALID_CONFIG"
  | "ERR_INVALID_MESSAGE"
  | "ERR_NO_WEBSOCKET"
  | "ERR_CONNECT"
  | "ERR_HANDSHAKE_REJECTED"
  | "ERR_CLOSED"
  | "ERR_INVALID_CLOSE_CODE"
  | "ERR_CLOSE_REASON_TOO_LONG"
  | "ERR_QUEUE_FULL"
  | "ERR_MESSAGE_TOO_LARGE"
  | "ERR_EXPIRED"
  | "ERR_DROPPED"
  | "ERR_STORE"
  | "ERR_STORE_UNREADABLE"
  | "ERR_NOT_STEADFAST"
  | "ERR_AUTH_HOOK"
  | "ERR_INTERNAL"
  | (string & {});

/** Every error steadfast reports. */
export declare class SteadfastError extends Error {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown });
  readonly code: ErrorCode;
}

export declare class SteadfastMessageEvent extends Event {
  readonly type: "message";
  readonly data: MessageData;
  /** The payload parsed as JSON. */
  json<T = unknown>(): T;
}

export declare class SteadfastStateEvent extends Event {
  readonly type: "state";
  readonly detail: ConnectionState;
  readonly state: StateName;
  readonly attempt?: number;
  readonly mode?: "reliable" | "plain";
  readonly nextRetryAt?: number;
  readonly retryInMs?: number;
  readonly reason?: string;
  readonly code?: number;
}

/** A message was acknowledged (or, in plain mode, handed to the socket). */
export declare class SteadfastAckEvent extends Event {
  readonly type: "ack";
  readonly id: number;
  readonly acked: boolean;
  readonly durable: boolean;
}

/** A message went on the wire and awaits its ACK (reliable mode; again after a reconnect that resends it). */
export declare class SteadfastSentEvent extends Event {
  readonly type: "sent";
  readonly id: number;
}

/** A message will never be acknowledged (ERR_EXPIRED, ERR_DROPPED, ...); its `send` rejects with the same error. */
export declare class SteadfastFailedEvent extends Event {
  readonly type: "failed";
  readonly id: number;
  readonly error: SteadfastError;
  readonly code: ErrorCode;
}

/** A message sent through a React or Vue hook's `send` (their `outgoing` list), or restored from the store after a reload. */
export interface OutgoingMessage {
  id: number;
  /** What was sent (restored messages: a string or bytes). */
  data: SendData;
  /** queued: in the outbox; sent: on the wire, awaiting the ACK (plain mode: final); acked: the server has it; failed: never will. */
  status: "queued" | "sent" | "acked" | "failed";
  /** It came back from the store when the client started. */
  restored: boolean;
  /** Why it failed. */
  error?: SteadfastError;
}

/** The options of `useSteadfast` (steadfast/react, steadfast/vue). */
export interface UseSteadfastOptions extends SteadfastOptions {
  /** How many received messages `messages` and sent ones `outgoing` keep (default 100). */
  keep?: number;
}

/** A message in the outbox when the client started. */
export interface RestoredMessage {
  /** Its id in this client (as in `sent`, `ack` and `failed` events). */
  id: number;
  data: MessageData;
}

/** The client started with messages from its store (a page reload or restart before their ACK); they are sent again. */
export declare class SteadfastRestoredEvent extends Event {
  readonly type: "restored";
  /** Oldest first. */
  readonly messages: RestoredMessage[];
}

export declare class SteadfastErrorEvent extends Event {
  readonly type: "error" | "warning";
  readonly error: SteadfastError;
  readonly code: ErrorCode;
  readonly message: string;
}

export interface SteadfastEventMap {
  message: SteadfastMessageEvent;
  state: SteadfastStateEvent;
  /** Every message's acknowledgement (plain mode: handed to the socket), restored ones included. */
  ack: SteadfastAckEvent;
  sent: SteadfastSentEvent;
  failed: SteadfastFailedEvent;
  /** First, before any progress, when the store held messages. */
  restored: SteadfastRestoredEvent;
  error: SteadfastErrorEvent;
  /** A degraded set-up: `ERR_STORE` (messages kept in memory), `ERR_NOT_STEADFAST` (the server selected steadfast.v1 without speaking it: plain mode). */
  warning: SteadfastErrorEvent;
  resync: Event;
  skipped: Event & { count: number };
}

/** A WebSocket client that never loses, duplicates or reorders a message. */
export declare class Steadfast extends EventTarget {
  constructor(url: string | URL, options?: SteadfastOptions);
  /** Construct and wait until it runs (rejects on bad options). */
  static connect(url: string | URL, options?: SteadfastOptions): Promise<Steadfast>;
  readonly url: string;
  /** Resolves once the client runs (its store loaded); rejects with a SteadfastError on bad options. */
  readonly ready: Promise<void>;
  /** The current connection state. */
  readonly state: ConnectionState;
  /** Counters (null until the client runs). */
  stats(): Stats | null;
  /** Queue a message; resolves on the server's ACK, rejects with a SteadfastError. */
  send(data: SendData, options?: SendOptions): Promise<SendResult>;
  /** Close (1000 or 3000-4999) and stop reconnecting; queued messages stay queued. */
  close(code?: number, reason?: string): Promise<void>;
  /** Connect again now, from any state. */
  reconnect(): void;
  /** Tell the client about its environment (browsers do this by themselves). */
  hint(hint: "online" | "offline" | "visible" | "hidden" | "pageshow"): void;
  [Symbol.asyncIterator](): AsyncIterableIterator<MessageData>;

  addEventListener<K extends keyof SteadfastEventMap>(
    type: K,
    listener: (event: SteadfastEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof SteadfastEventMap>(
    type: K,
    listener: (event: SteadfastEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

/** The version of the wasm module. */
export declare function version(): Promise<string>;
