// steadfast/vue: the useSteadfast composable.
import { onScopeDispose, ref, shallowRef, toValue, watch } from "vue";
import { Steadfast, _subscribe } from "steadfast";

/**
 * A Steadfast client for the calling scope (closed when it is disposed,
 * recreated when `url` — a string, ref or getter — changes).
 */
export function useSteadfast(url, options = {}) {
  const { keep = 100, ...clientOptions } = options;
  const client = shallowRef(null);
  const state = ref({ state: "connecting", attempt: 0 });
  const queued = ref(0);
  const messages = shallowRef([]);
  const lastMessage = shallowRef(null);
  const error = shallowRef(null);
  let stop = null;

  const start = (target) => {
    stop?.();
    stop = null;
    if (!target) return;
    const created = new Steadfast(target, clientOptions);
    const unsubscribe = _subscribe(created, {
      onState: (detail) => (state.value = detail),
      onMessage: (data) => {
        const next = messages.value.concat([data]);
        messages.value = next.length > keep ? next.slice(next.length - keep) : next;
        lastMessage.value = data;
      },
      onError: (value) => (error.value = value),
      onQueued: (count) => (queued.value = count),
    });
    client.value = created;
    state.value = created.state;
    stop = () => {
      unsubscribe();
      created.close(1000, "disposed").catch(() => {});
      client.value = null;
    };
  };

  watch(() => toValue(url), start, { immediate: true });
  onScopeDispose(() => stop?.());

  const send = (data, sendOptions = {}) => {
    const current = client.value;
    if (!current) return Promise.reject(new Error("useSteadfast: no client"));
    return current.send(data, {
      ...sendOptions,
      onQueued: (id, durable) => {
        queued.value = current.stats()?.queued ?? 0;
        sendOptions.onQueued?.(id, durable);
      },
    });
  };
  const close = (code, reason) => client.value?.close(code, reason) ?? Promise.resolve();
  const reconnect = () => client.value?.reconnect();

  return { client, state, queued, messages, lastMessage, error, send, close, reconnect };
}
