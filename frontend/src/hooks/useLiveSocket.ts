/** The one hook that owns a WebSocket: connects (offering the API token as a subprotocol, see
 * api/auth.ts), resumes from the last seen `seq`, reconnects with back-off, reports to the banner,
 * asks for sign-in when the server refuses the token, and closes on unmount or when the URL changes. */
import { useEffect, useRef, useState } from "react";
import { auth } from "../api/auth";
import { connection } from "../lib/connection";
import { LiveSocket, type LiveSocketOptions, type SocketLike, type SocketStatus } from "../lib/liveSocket";

export interface UseLiveSocketArgs<T> {
  /** null = do not connect (e.g. the run is already finished). */
  url: ((cursor: number | null) => string) | null;
  /** Identity of the stream: a change closes the socket and opens a new one. */
  streamKey: string;
  cursor?: number | null;
  onMessage: (msg: T) => void;
  onReconnect?: () => void;
  isFinal?: (msg: T) => boolean;
  createSocket?: LiveSocketOptions<T>["createSocket"];
}

function browserSocket(url: string): SocketLike {
  return new WebSocket(url, auth.wsProtocols()) as unknown as SocketLike;
}

export function useLiveSocket<T extends { seq?: number; type?: string }>(args: UseLiveSocketArgs<T>): SocketStatus {
  const [status, setStatus] = useState<SocketStatus>(args.url ? "connecting" : "closed");
  // handlers live in a ref so a re-render with new closures never reconnects
  const handlers = useRef(args);
  handlers.current = args;
  const enabled = args.url !== null;

  useEffect(() => {
    if (!enabled) {
      setStatus("closed");
      return;
    }
    const id = connection.register();
    const sock = new LiveSocket<T>({
      url: (c) => handlers.current.url?.(c) ?? "",
      cursor: handlers.current.cursor ?? null,
      onMessage: (m) => handlers.current.onMessage(m),
      onReconnect: () => handlers.current.onReconnect?.(),
      isFinal: (m) => handlers.current.isFinal?.(m) ?? false,
      createSocket: handlers.current.createSocket ?? browserSocket,
      onFatal: (code, reason) => {
        if (code === 1008 && /token/i.test(reason)) auth.unauthorized();
      },
      onStatus: (s) => {
        setStatus(s);
        connection.report(id, s);
      },
    });
    sock.start();
    return () => {
      sock.stop();
      connection.report(id, "closed");
    };
  }, [args.streamKey, enabled]);

  return status;
}
