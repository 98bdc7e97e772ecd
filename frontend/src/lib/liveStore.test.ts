import { describe, expect, it, vi } from "vitest";
import { LiveStore } from "./liveStore";

const metrics = (seq: number, step: number, values: Record<string, number>) =>
  ({ type: "metrics", run_id: "r", seq, ts: 0, step, values }) as const;

describe("LiveStore", () => {
  it("notifies only the subscribers of the keys an event carries", () => {
    const store = new LiveStore();
    const reward = vi.fn();
    const kl = vi.fn();
    store.subscribe(["reward/mean"], reward);
    store.subscribe(["kl/k1"], kl);
    store.apply(metrics(0, 0, { "reward/mean": 1 }));
    expect(reward).toHaveBeenCalledTimes(1);
    expect(kl).not.toHaveBeenCalled();
    expect(store.get("reward/mean")).toEqual({ steps: [0], values: [1] });
  });

  it("changes the version of a key set only when one of its keys changes", () => {
    const store = new LiveStore();
    const v0 = store.version(["kl/k1"]);
    store.apply(metrics(0, 0, { "reward/mean": 1 }));
    expect(store.version(["kl/k1"])).toBe(v0);
    store.apply(metrics(1, 1, { "kl/k1": 1 }));
    expect(store.version(["kl/k1"])).not.toBe(v0);
  });

  it("tracks status from lifecycle events and the last seq", () => {
    const store = new LiveStore();
    store.apply({ type: "run_finished", run_id: "r", seq: 7, ts: 0, step: 3 });
    expect(store.status).toBe("succeeded");
    expect(store.lastSeq).toBe(7);
  });
});
