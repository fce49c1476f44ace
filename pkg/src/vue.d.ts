import type { MaybeRefOrGetter, Ref, ShallowRef } from "vue";
import type {
  ConnectionState,
  MessageData,
  SendData,
  SendOptions,
  SendResult,
  Steadfast,
  SteadfastError,
  SteadfastOptions,
} from "steadfast";

export interface UseSteadfastOptions extends SteadfastOptions {
  /** How many received messages `messages` keeps (default 100). */
  keep?: number;
}

export interface UseSteadfast {
  client: ShallowRef<Steadfast | null>;
  state: Ref<ConnectionState>;
  queued: Ref<number>;
  messages: ShallowRef<MessageData[]>;
  lastMessage: ShallowRef<MessageData | null>;
  error: ShallowRef<SteadfastError | null>;
  send(data: SendData, options?: SendOptions): Promise<SendResult>;
  close(code?: number, reason?: string): Promise<void>;
  reconnect(): void;
}

/** A Steadfast client for the calling scope; `url` may be a ref or getter (null: none). */
export declare function useSteadfast(
  url: MaybeRefOrGetter<string | null | undefined>,
  options?: UseSteadfastOptions,
): UseSteadfast;
