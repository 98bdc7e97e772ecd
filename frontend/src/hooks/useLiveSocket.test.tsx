import { act, cleanup, renderHook } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { auth } from "../api/auth";
import { connection } from "../lib/connection";
import type { SocketLike } from "../lib/liveSocket";
import { useLiveSocket } from "./useLiveSocket";

class Sock implements SocketLike {
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  closed = false;
  constructor(readonly url: string) {}
  open() { this.onopen?.(new Event("open")); }
  send(m: object) { this.onmessage?.({ data: JSON.stringify(m) } as MessageEvent); }
  drop(code = 1006, reason = "") { this.onclose?.({ code, reason } as CloseEvent); }
  close() { this.closed = true; }
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

describe("useLiveSocket", () => {
  it("reconnects after a drop with the last seen seq, delivering every event once, and shows the banner meanwhile", () => {
    const sockets: Sock[] = [];
    const got: number[] = [];
    const { result, unmount } = renderHook(() =>
      useLiveSocket<{ seq?: number; type?: string }>({
        url: (c) => `ws://t/live?cursor=${c}`,
        streamKey: "r1",
        cursor: -1,
        onMessage: (m) => got.push(m.seq!),
        createSocket: (u) => { const s = new Sock(u); sockets.push(s); return s; },
      }));
    act(() => sockets[0]!.open());
    expect(result.current).toBe("open");
    act(() => { [0, 1, 2].forEach((seq) => sockets[0]!.send({ seq, type: "metrics" })); });
    act(() => sockets[0]!.drop());
    expect(result.current).toBe("reconnecting");
    expect(connection.isDown()).toBe(true);
    act(() => { vi.advanceTimersByTime(1000); });
    expect(sockets).toHaveLength(2);
    expect(sockets[1]!.url).toBe("ws://t/live?cursor=2");
    act(() => {
      sockets[1]!.open();
      [2, 3, 4].forEach((seq) => sockets[1]!.send({ seq, type: "metrics" })); // 2 is a replay overlap
    });
    expect(got).toEqual([0, 1, 2, 3, 4]);
    expect(result.current).toBe("open");
    expect(connection.isDown()).toBe(false);
    unmount();
    expect(sockets[1]!.closed).toBe(true);
    act(() => { vi.advanceTimersByTime(60_000); });
    expect(sockets).toHaveLength(2); // no reconnect after unmount
  });

  it("does not connect without a URL, and stops after the final event", () => {
    const sockets: Sock[] = [];
    const { result, rerender } = renderHook(({ url }: { url: string | null }) =>
      useLiveSocket<{ seq?: number; type?: string }>({
        url: url ? () => url : null,
        streamKey: "r2",
        cursor: -1,
        onMessage: () => undefined,
        isFinal: (m) => m.type === "run_finished",
        createSocket: (u) => { const s = new Sock(u); sockets.push(s); return s; },
      }), { initialProps: { url: null as string | null } });
    expect(sockets).toHaveLength(0);
    expect(result.current).toBe("closed");
    rerender({ url: "ws://t/x" });
    act(() => sockets[0]!.open());
    act(() => sockets[0]!.send({ seq: 0, type: "run_finished" }));
    expect(sockets[0]!.closed).toBe(true);
    expect(result.current).toBe("closed");
  });

  it("asks for sign-in when the server closes with 1008 for its token, and does not reconnect", () => {
    const sockets: Sock[] = [];
    auth.signIn("stale");
    const { result } = renderHook(() =>
      useLiveSocket<{ seq?: number; type?: string }>({
        url: () => "ws://t/live",
        streamKey: "r3",
        cursor: null,
        onMessage: () => undefined,
        createSocket: (u) => { const s = new Sock(u); sockets.push(s); return s; },
      }));
    act(() => sockets[0]!.open());
    act(() => sockets[0]!.drop(1008, "missing or invalid token"));
    act(() => { vi.advanceTimersByTime(60_000); });
    expect(sockets).toHaveLength(1);
    expect(result.current).toBe("closed");
    expect(connection.isDown()).toBe(false); // no "reconnecting" banner either
    expect(auth.snapshot()).toMatchObject({ needed: true, rejected: true });
  });
});
