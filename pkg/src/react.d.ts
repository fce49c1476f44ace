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
  /** The client (null before the first effect and after unmount). */
  client: Steadfast | null;
  state: ConnectionState;
  /** Messages in the outbox. */
  queued: number;
  /** The last `keep` received messages, oldest first. */
  messages: MessageData[];
  lastMessage: MessageData | null;
  /** The last `keep` messages sent or restored, oldest first, with their status. */
  outgoing: OutgoingMessage[];
  /** The latest `error` or `warning`. */
  error: SteadfastError | null;
  send(data: SendData, options?: SendOptions): Promise<SendResult>;
  close(code?: number, reason?: string): Promise<void>;
  reconnect(): void;
}

/** A Steadfast client for the component's lifetime; `url` null or empty: none. */
export declare function useSteadfast(url: string | null | undefined, options?: UseSteadfastOptions): UseSteadfast;
