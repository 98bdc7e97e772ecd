import { describe, expect, it } from "vitest";
import { backoffDelay, LiveSocket, type SocketLike } from "./liveSocket";

/** A fake server holding a run's events; each connection replays everything after its cursor. */
class FakeServer {
  events: { seq: number; type: string; step: number }[] = [];
  sockets: FakeSocket[] = [];
  urls: string[] = [];

  connect(url: string): FakeSocket {
    this.urls.push(url);
    const s = new FakeSocket(this, Number(new URL(url).searchParams.get("cursor")));
    this.sockets.push(s);
    return s;
  }

  emit(n = 1): void {
    for (let i = 0; i < n; i++) {
      const ev = { seq: this.events.length, type: "metrics", step: this.events.length };
      this.events.push(ev);
      this.sockets.filter((s) => s.open).forEach((s) => s.send(ev));
    }
  }
}

class FakeSocket implements SocketLike {
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  open = false;
  constructor(private server: FakeServer, private cursor: number) {}

  accept(): void {
    this.open = true;
    this.onopen?.(new Event("open"));
    this.server.events.filter((e) => e.seq > this.cursor).forEach((e) => this.send(e));
  }
  send(data: unknown): void {
    this.onmessage?.({ data: JSON.stringify(data) } as MessageEvent);
  }
  drop(code = 1006, reason = ""): void {
    this.open = false;
    this.onclose?.({ code, reason } as CloseEvent);
  }
  close(): void {
    this.open = false;
  }
}

function harness(cursor = -1) {
  const server = new FakeServer();
  const timers: (() => void)[] = [];
  const got: number[] = [];
  const statuses: string[] = [];
  const sock = new LiveSocket<{ seq?: number; type?: string }>({
    url: (c) => `ws://x/api/runs/r/live?cursor=${c}`,
    cursor,
    onMessage: (m) => got.push(m.seq!),
    onStatus: (s) => statuses.push(s),
    createSocket: (u) => server.connect(u),
    setTimer: (fn) => timers.push(fn),
    clearTimer: () => undefined,
    random: () => 0.5,
  });
  const fireTimers = () => timers.splice(0).forEach((fn) => fn());
  return { server, sock, got, statuses, fireTimers, last: () => server.sockets[server.sockets.length - 1]! };
}

describe("LiveSocket", () => {
  it("resumes from the last seen seq after a drop: no gap, no duplicate", () => {
    const h = harness();
    h.server.emit(3); // stored before we connect
    h.sock.start();
    h.last().accept(); // replays 0..2
    h.server.emit(2); // 3, 4 live
    h.last().drop();
    expect(h.statuses).toContain("reconnecting");
    h.server.emit(3); // 5..7 happen while we are away
    h.fireTimers();
    expect(h.server.urls[1]).toContain("cursor=4");
    h.last().accept(); // replays 5..7
    h.last().send({ seq: 6, type: "metrics" }); // a duplicate from an overlapping replay
    h.server.emit(1); // 8
    expect(h.got).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(h.statuses[h.statuses.length - 1]).toBe("open");
  });

  it("starts from a given cursor", () => {
    const h = harness(1);
    h.server.emit(4);
    h.sock.start();
    h.last().accept();
    expect(h.got).toEqual([2, 3]);
  });

  it("ignores heartbeats and reconnects with its cursor when told it lagged", () => {
    const h = harness();
    h.sock.start();
    h.last().accept();
    h.server.emit(2);
    h.last().send({ type: "heartbeat", ts: 1 });
    const s = h.last();
    s.send({ type: "lagged", cursor: 1 });
    s.drop(4000); // the server closes after "lagged"
    h.fireTimers();
    h.server.emit(1);
    h.last().accept();
    expect(h.got).toEqual([0, 1, 2]);
  });

  it("stops for good on 'run not found' and on stop()", () => {
    const h = harness();
    h.sock.start();
    h.last().drop(4404);
    h.fireTimers();
    expect(h.server.sockets).toHaveLength(1);
    expect(h.sock.status).toBe("closed");
    const h2 = harness();
    h2.sock.start();
    h2.last().accept();
    h2.sock.stop();
    h2.fireTimers();
    expect(h2.server.sockets).toHaveLength(1);
  });
});

describe("LiveSocket refused by policy", () => {
  it("stops on 1008 (no or a wrong token, foreign Origin) and reports it once instead of retrying forever", () => {
    const server = new FakeServer();
    const timers: (() => void)[] = [];
    const fatal: [number, string][] = [];
    const sock = new LiveSocket<{ seq?: number; type?: string }>({
      url: (c) => `ws://x/api/runs/r/live?cursor=${c}`,
      cursor: -1,
      onMessage: () => undefined,
      onFatal: (code, reason) => fatal.push([code, reason]),
      createSocket: (u) => server.connect(u),
      setTimer: (fn) => timers.push(fn),
      clearTimer: () => undefined,
    });
    sock.start();
    server.sockets[0]!.accept(); // the server accepts, then closes with the code
    server.sockets[0]!.drop(1008, "missing or invalid token");
    timers.splice(0).forEach((fn) => fn());
    expect(server.sockets).toHaveLength(1);
    expect(sock.status).toBe("closed");
    expect(fatal).toEqual([[1008, "missing or invalid token"]]);
  });
});

describe("backoffDelay", () => {
  it("grows exponentially up to the cap", () => {
    const mid = () => 0.5;
    expect(backoffDelay(0, 500, 10_000, mid)).toBe(500);
    expect(backoffDelay(3, 500, 10_000, mid)).toBe(4000);
    expect(backoffDelay(10, 500, 10_000, mid)).toBe(10_000);
  });
});
