// What the React and Vue examples share: which server, the client's
// options, how a connection state and a payload are shown. No framework
// code here; each app renders these with its own components.

/** The steadfast server: `?server=ws://…`, else `steadfast serve`'s default port on this host. */
export function serverUrl(location = window.location) {
  const given = new URLSearchParams(location.search).get("server");
  return given || `ws://${location.hostname || "127.0.0.1"}:9000/`;
}

/**
 * The client's defaults suit a chat: retries within 1 s for the first 30 s
 * of an outage (full jitter), easing off to 30 s after that. Keep the last
 * 200 messages each way on screen.
 */
export const clientOptions = { keep: 200 };

/**
 * A connection state as the UI shows it: `{ name, text, retryMs }`.
 * `now` (Date.now()) drives the countdown to the next attempt.
 */
export function describeState(state, now) {
  switch (state.state) {
    case "open":
      return { name: "open", text: `connected (${state.mode})` };
    case "connecting":
      return { name: "connecting", text: `connecting (attempt ${state.attempt})` };
    case "reconnecting": {
      const retryMs = Math.max(0, state.nextRetryAt - now);
      const why = state.code ? `closed ${state.code}` : state.reason;
      return {
        name: "reconnecting",
        text: `reconnecting in ${(retryMs / 1000).toFixed(1)} s (attempt ${state.attempt}, ${why})`,
        retryMs,
      };
    }
    case "suspended":
      return {
        name: "suspended",
        text: state.reason === "offline" ? "offline: waiting for the network" : "waiting for credentials",
      };
    case "closed":
      return { name: "closed", text: `closed (${state.reason}${state.code ? " " + state.code : ""})` };
    default:
      return { name: state.state, text: state.state };
  }
}

/** Payloads above this many bytes are shown by size and checksum, not in full. */
export const SHOW_IN_FULL = 256;

const encoder = new TextEncoder();
const digests = new Map();

/** Hex SHA-256 of a string's UTF-8 bytes or of bytes (cached per payload). */
export async function sha256(data) {
  const cached = digests.get(data);
  if (cached) return cached;
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const hex = Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
  if (digests.size > 512) digests.delete(digests.keys().next().value);
  digests.set(data, hex);
  return hex;
}

/** `{ kind, size, text, large }`: what to show for a payload before its checksum is known. */
export function describePayload(data) {
  if (typeof data === "string") {
    const size = encoder.encode(data).length;
    return { kind: "text", size, text: data, large: size > SHOW_IN_FULL };
  }
  return { kind: "binary", size: data.byteLength, text: "", large: true };
}

/** Bytes, with thousands separators. */
export function formatBytes(n) {
  return `${n.toLocaleString("en-US")} bytes`;
}

/** A picked file's bytes, sent as binary. */
export async function readFile(file) {
  return new Uint8Array(await file.arrayBuffer());
}

/**
 * Log every state change of `client` with the time it happened, as
 * `{ at, name, text }`, and return the function that stops listening.
 * (Listening to the client directly sees every change; a framework may
 * batch quick ones into one render.)
 */
export function logStates(client, onEntry) {
  const listener = (event) => {
    const at = Date.now();
    onEntry({ at, ...describeState(event.detail, at), reason: event.detail.reason ?? null });
  };
  client.addEventListener("state", listener);
  return () => client.removeEventListener("state", listener);
}
