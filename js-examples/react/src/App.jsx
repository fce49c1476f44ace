import { useEffect, useReducer, useState } from "react";
import { useSteadfast } from "steadfast/react";
import {
  clientOptions,
  describePayload,
  describeState,
  formatBytes,
  logStates,
  readFile,
  serverUrl,
  sha256,
} from "../../shared/chat.js";

const url = serverUrl();

/**
 * Date.now() at each render; while `ticking` (the countdown) a render every
 * 100 ms. The time is read at render, not kept from the last tick: a new
 * wait would otherwise be shown against a clock up to a tick (or, after a
 * pause, a whole phase) old, and count down from too high.
 */
function useNow(ticking) {
  const [, tick] = useReducer((n) => n + 1, 0);
  useEffect(() => {
    if (!ticking) return undefined;
    const timer = setInterval(tick, 100);
    return () => clearInterval(timer);
  }, [ticking]);
  return Date.now();
}

function Payload({ data }) {
  const shown = describePayload(data);
  const [digest, setDigest] = useState(null);
  useEffect(() => {
    let live = true;
    if (shown.large) sha256(data).then((hex) => live && setDigest(hex));
    return () => {
      live = false;
    };
  }, [data, shown.large]);
  if (!shown.large) return <span className="payload">{shown.text}</span>;
  return (
    <span className="payload" data-size={shown.size} data-sha256={digest ?? ""}>
      {shown.kind} · {formatBytes(shown.size)} · sha256 {digest ?? "…"}
    </span>
  );
}

function StateBadge({ state }) {
  const now = useNow(state.state === "reconnecting");
  const shown = describeState(state, now);
  return (
    <span className="state" data-testid="state" data-state={shown.name} data-retry-ms={shown.retryMs ?? ""}>
      {shown.text}
    </span>
  );
}

export default function App() {
  const chat = useSteadfast(url, clientOptions);
  const [text, setText] = useState("");
  const [log, setLog] = useState([]);
  const [problem, setProblem] = useState(null);

  useEffect(() => {
    if (!chat.client) return undefined;
    return logStates(chat.client, (entry) => setLog((list) => list.concat([entry]).slice(-50)));
  }, [chat.client]);

  const send = (data) => chat.send(data).catch((error) => setProblem(`${error.code}: ${error.message}`));
  const submit = (event) => {
    event.preventDefault();
    if (text === "") return;
    send(text);
    setText("");
  };
  const pick = async (event) => {
    const [file] = event.target.files;
    event.target.value = "";
    if (file) send(await readFile(file));
  };

  return (
    <main>
      <header>
        <h1>steadfast · React</h1>
        <StateBadge state={chat.state} />
        <span>
          queued: <span className="queued" data-testid="queued">{chat.queued}</span>
        </span>
        <span className="url">{url}</span>
      </header>
      <form className="composer" onSubmit={submit}>
        <textarea
          data-testid="text"
          placeholder="Type a message, or paste a large payload"
          value={text}
          onChange={(event) => setText(event.target.value)}
          onKeyDown={(event) => {
            if (event.key === "Enter" && !event.shiftKey) submit(event);
          }}
        />
        <button type="submit" data-testid="send">
          Send
        </button>
        <label>
          Send a file…
          <input type="file" data-testid="file" onChange={pick} />
        </label>
      </form>
      <section>
        <h2>Sent</h2>
        <ol data-testid="outgoing">
          {chat.outgoing.map((message) => (
            <li key={message.id} data-id={message.id} data-status={message.status}>
              <span className="id">#{message.id}</span>
              <span className="status" data-status={message.status}>
                {message.status}
              </span>
              {message.restored && <span className="restored">restored</span>}
              <Payload data={message.data} />
            </li>
          ))}
        </ol>
      </section>
      <section>
        <h2>Received</h2>
        <ol data-testid="received">
          {chat.messages.map((data, index) => (
            <li key={index}>
              <Payload data={data} />
            </li>
          ))}
        </ol>
      </section>
      <section className="log">
        <h2>Connection</h2>
        {problem && <p data-testid="error">{problem}</p>}
        {chat.error && chat.state.state !== "open" && (
          <p className="last-error">
            last error: {chat.error.code}: {chat.error.message}
          </p>
        )}
        <ol data-testid="log">
          {log.map((entry, index) => (
            <li key={index} data-state={entry.name} data-reason={entry.reason ?? ""}>
              {new Date(entry.at).toISOString().slice(11, 23)} {entry.text}
            </li>
          ))}
        </ol>
      </section>
    </main>
  );
}
