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
  const outgoing = shallowRef([]);
  const error = shallowRef(null);
  let current = null;

  const start = (target) => {
    current?.stop();
    current = null;
    if (!target) return;
    const created = new Steadfast(target, clientOptions);
    const subscription = _subscribe(
      created,
      {
        onState: (detail) => (state.value = detail),
        onMessage: (data) => {
          const next = messages.value.concat([data]);
          messages.value = next.length > keep ? next.slice(next.length - keep) : next;
          lastMessage.value = data;
        },
        onError: (value) => (error.value = value),
        onQueued: (count) => (queued.value = count),
        onOutgoing: (list) => (outgoing.value = list),
      },
      keep,
    );
    client.value = created;
    state.value = created.state;
    messages.value = [];
    outgoing.value = [];
    current = {
      send: subscription.send,
      stop: () => {
        subscription.stop();
        created.close(1000, "disposed").catch(() => {});
        client.value = null;
      },
    };
  };

  watch(() => toValue(url), start, { immediate: true });
  onScopeDispose(() => current?.stop());

  const send = (data, sendOptions) =>
    current ? current.send(data, sendOptions) : Promise.reject(new Error("useSteadfast: no client"));
  const close = (code, reason) => client.value?.close(code, reason) ?? Promise.resolve();
  const reconnect = () => client.value?.reconnect();

  return { client, state, queued, messages, lastMessage, outgoing, error, send, close, reconnect };
}
