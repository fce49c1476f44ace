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
  const [client, setClient] = useState(null);
  const [state, setState] = useState(initial);
  const [queued, setQueued] = useState(0);
  const [messages, setMessages] = useState([]);
  const [error, setError] = useState(null);

  useEffect(() => {
    if (!url) return undefined;
    const created = new Steadfast(url, optionsRef.current);
    const unsubscribe = _subscribe(created, {
      onState: setState,
      onMessage: (data) =>
        setMessages((list) => {
          const next = list.concat([data]);
          return next.length > keep ? next.slice(next.length - keep) : next;
        }),
      onError: setError,
      onQueued: setQueued,
    });
    setClient(created);
    setState(created.state);
    return () => {
      unsubscribe();
      created.close(1000, "unmounted").catch(() => {});
      setClient(null);
    };
  }, [url, clientOptions.name, keep]);

  const send = useCallback(
    (data, sendOptions = {}) => {
      if (!client) return Promise.reject(new Error("useSteadfast: no client yet"));
      const sent = client.send(data, {
        ...sendOptions,
        onQueued: (id, durable) => {
          setQueued(client.stats()?.queued ?? 0);
          sendOptions.onQueued?.(id, durable);
        },
      });
      return sent;
    },
    [client],
  );
  const close = useCallback((code, reason) => client?.close(code, reason) ?? Promise.resolve(), [client]);
  const reconnect = useCallback(() => client?.reconnect(), [client]);

  return {
    client,
    state,
    queued,
    messages,
    lastMessage: messages.length > 0 ? messages[messages.length - 1] : null,
    error,
    send,
    close,
    reconnect,
  };
}
