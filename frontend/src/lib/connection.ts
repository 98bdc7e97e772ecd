/** App-wide connection state for the "disconnected — reconnecting" banner: every live socket reports
 * here; the banner shows while any of them is reconnecting. */
import type { SocketStatus } from "./liveSocket";

const states = new Map<number, SocketStatus>();
const listeners = new Set<() => void>();
let nextId = 1;
let snapshot = false;

function recompute(): void {
  const down = [...states.values()].some((s) => s === "reconnecting");
  if (down !== snapshot) {
    snapshot = down;
    listeners.forEach((fn) => fn());
  }
}

export const connection = {
  register(): number {
    return nextId++;
  },
  report(id: number, s: SocketStatus): void {
    if (s === "closed") states.delete(id);
    else states.set(id, s);
    recompute();
  },
  isDown(): boolean {
    return snapshot;
  },
  subscribe(fn: () => void): () => void {
    listeners.add(fn);
    return () => listeners.delete(fn);
  },
};
