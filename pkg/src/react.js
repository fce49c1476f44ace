// steadfast/react: the useSteadfast hook.
import { useCallback, useEffect, useRef, useState } from "react";
import { Steadfast, _subscribe } from "steadfast";

const initial = { state: "connecting", attempt: 0 };

/**
 * A Steadfast client for the component's lifetime (closed on unmount,
 * recreated when `url` or `options.name` changes; other options are read
 * when the client is created).
 */
export function useSteadfast(url, options = {}) {
  const { keep = 100, ...clientOptions } = options;
  const optionsRef = useRef(clientOptions);
  optionsRef.current = clientOptions;
  const [live, setLive] = useState(null);
  const [state, setState] = useState(initial);
  const [queued, setQueued] = useState(0);
  const [messages, setMessages] = useState([]);
  const [outgoing, setOutgoing] = useState([]);
  const [error, setError] = useState(null);

  useEffect(() => {
    if (!url) return undefined;
    const created = new Steadfast(url, optionsRef.current);
    const subscription = _subscribe(
      created,
      {
        onState: setState,
        onMessage: (data) =>
          setMessages((list) => {
            const next = list.concat([data]);
            return next.length > keep ? next.slice(next.length - keep) : next;
          }),
        onError: setError,
        onQueued: setQueued,
        onOutgoing: setOutgoing,
      },
      keep,
    );
    setLive({ client: created, send: subscription.send });
    setState(created.state);
    setMessages([]);
    setOutgoing([]);
    return () => {
      subscription.stop();
      created.close(1000, "unmounted").catch(() => {});
      setLive(null);
    };
  }, [url, clientOptions.name, keep]);

  const send = useCallback(
    (data, sendOptions) =>
      live ? live.send(data, sendOptions) : Promise.reject(new Error("useSteadfast: no client yet")),
    [live],
  );
  const client = live?.client ?? null;
  const close = useCallback((code, reason) => client?.close(code, reason) ?? Promise.resolve(), [client]);
  const reconnect = useCallback(() => client?.reconnect(), [client]);

  return {
    client,
    state,
    queued,
    messages,
    lastMessage: messages.length > 0 ? messages[messages.length - 1] : null,
    outgoing,
    error,
    send,
    close,
    reconnect,
  };
}
