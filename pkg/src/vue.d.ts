import type { MaybeRefOrGetter, Ref, ShallowRef } from "vue";
import type {
  ConnectionState,
  MessageData,
  OutgoingMessage,
  SendData,
  SendOptions,
  SendResult,
  Steadfast,
  SteadfastError,
  UseSteadfastOptions,
} from "steadfast";

export type { UseSteadfastOptions };

export interface UseSteadfast {
  client: ShallowRef<Steadfast | null>;
  state: Ref<ConnectionState>;
  queued: Ref<number>;
  messages: ShallowRef<MessageData[]>;
  lastMessage: ShallowRef<MessageData | null>;
  /** The last `keep` messages sent or restored, oldest first, with their status. */
  outgoing: ShallowRef<OutgoingMessage[]>;
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
