import { describe, expect, it, vi } from "vitest";
import { M, type MetricsEvent, type TerminalEvent } from "../api/client";
import { LiveStore } from "./liveStore";

const metrics = (seq: number, step: number, values: Record<string, number>): MetricsEvent =>
  ({ v: 1, type: "metrics", run_id: "r", seq, ts: 0, step, values });

describe("LiveStore", () => {
  it("notifies only the subscribers of the keys an event carries", () => {
    const store = new LiveStore();
    const reward = vi.fn();
    const kl = vi.fn();
    store.subscribe([M.REWARD_MEAN], reward);
    store.subscribe([M.KL_K1], kl);
    store.apply(metrics(0, 0, { [M.REWARD_MEAN]: 1 }));
    expect(reward).toHaveBeenCalledTimes(1);
    expect(kl).not.toHaveBeenCalled();
    expect(store.get(M.REWARD_MEAN)).toEqual({ steps: [0], values: [1] });
  });

  it("changes the version of a key set only when one of its keys changes", () => {
    const store = new LiveStore();
    const v0 = store.version([M.KL_K1]);
    store.apply(metrics(0, 0, { [M.REWARD_MEAN]: 1 }));
    expect(store.version([M.KL_K1])).toBe(v0);
    store.apply(metrics(1, 1, { [M.KL_K1]: 1 }));
    expect(store.version([M.KL_K1])).not.toBe(v0);
  });

  it("tracks status from lifecycle events and the last seq", () => {
    const store = new LiveStore();
    const finished: TerminalEvent = { v: 1, type: "run_finished", run_id: "r", seq: 7, ts: 0, step: 3, summary: {} };
    store.apply(finished);
    expect(store.status).toBe("succeeded");
    expect(store.lastSeq).toBe(7);
  });
});
