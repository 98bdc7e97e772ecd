/** One WebSocket with resume-from-cursor and reconnect with back-off, independent of React.
 *
 * The server sends events with `seq` 0, 1, 2, ... and replays everything after `?cursor=N` on
 * connect. We remember the last `seq` delivered, reconnect with it, and drop anything at or below
 * it, so a dropped connection costs neither a gap nor a duplicate. */

export type SocketStatus = "connecting" | "open" | "reconnecting" | "closed";

export interface SocketLike {
  onopen: ((ev: Event) => void) | null;
  onmessage: ((ev: MessageEvent) => void) | null;
  onclose: ((ev: CloseEvent) => void) | null;
  onerror: ((ev: Event) => void) | null;
  close(code?: number, reason?: string): void;
}

export interface LiveSocketOptions<T> {
  /** URL for a connection resuming after `cursor` (-1 = from the start, null = no cursor). */
  url: (cursor: number | null) => string;
  onMessage: (msg: T) => void;
  onStatus?: (s: SocketStatus) => void;
  /** Called after a reconnect (e.g. to refetch what a cursor-less stream may have missed). */
  onReconnect?: () => void;
  /** Start after this seq; null for streams without a cursor (`/api/live`). */
  cursor?: number | null;
  /** Stop for good after a message for which this returns true (a terminal run event). */
  isFinal?: (msg: T) => boolean;
  createSocket?: (url: string) => SocketLike;
  /** Called once when the server closes with a code after which reconnecting cannot help. */
  onFatal?: (code: number, reason: string) => void;
  baseDelayMs?: number;
  maxDelayMs?: number;
  random?: () => number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (t: unknown) => void;
}

/** Back-off before reconnect attempt `n` (0-based): exponential, capped, with +-25 % jitter. */
export function backoffDelay(n: number, base = 500, max = 10_000, random: () => number = Math.random): number {
  const d = Math.min(max, base * 2 ** n);
  return Math.round(d * (0.75 + 0.5 * random()));
}

/** Close codes after which reconnecting cannot help: 1008 policy violation (no or a wrong token,
 * a refused Origin or Host), 4404 run not found. The server accepts, then closes with them. */
const FATAL_CODES = new Set([1008, 4404]);

export class LiveSocket<T extends { seq?: number; type?: string }> {
  private ws: SocketLike | null = null;
  private attempt = 0;
  private timer: unknown = null;
  private stopped = false;
  private everOpened = false;
  cursor: number | null;
  status: SocketStatus = "connecting";

  constructor(private readonly opts: LiveSocketOptions<T>) {
    this.cursor = opts.cursor ?? null;
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) (this.opts.clearTimer ?? clearTimeout)(this.timer as ReturnType<typeof setTimeout>);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close(1000, "client done");
    }
    this.setStatus("closed");
  }

  private setStatus(s: SocketStatus): void {
    if (this.status === s) return;
    this.status = s;
    this.opts.onStatus?.(s);
  }

  private connect(): void {
    const make = this.opts.createSocket ?? ((u: string) => new WebSocket(u) as unknown as SocketLike);
    const ws = make(this.opts.url(this.cursor));
    this.ws = ws;
    ws.onopen = () => {
      const wasReconnect = this.everOpened;
      this.everOpened = true;
      this.attempt = 0;
      this.setStatus("open");
      if (wasReconnect) this.opts.onReconnect?.();
    };
    ws.onmessage = (ev: MessageEvent) => {
      let msg: T;
      try {
        msg = JSON.parse(String(ev.data)) as T;
      } catch {
        return;
      }
      if (msg.type === "heartbeat") return;
      if (msg.type === "lagged") {
        ws.close(4000, "lagged"); // onclose reconnects from our cursor
        return;
      }
      if (typeof msg.seq === "number" && this.cursor !== null) {
        if (msg.seq <= this.cursor) return; // replayed twice: already delivered
        this.cursor = msg.seq;
      }
      this.opts.onMessage(msg);
      if (this.opts.isFinal?.(msg)) this.stop();
    };
    ws.onerror = () => {
      /* onclose follows and decides */
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (FATAL_CODES.has(ev.code)) {
        this.stopped = true;
        this.setStatus("closed");
        this.opts.onFatal?.(ev.code, ev.reason ?? "");
        return;
      }
      this.setStatus(this.everOpened ? "reconnecting" : "connecting");
      const delay = backoffDelay(this.attempt++, this.opts.baseDelayMs, this.opts.maxDelayMs, this.opts.random);
      this.timer = (this.opts.setTimer ?? setTimeout)(() => {
        this.timer = null;
        if (!this.stopped) this.connect();
      }, delay);
    };
  }
}
