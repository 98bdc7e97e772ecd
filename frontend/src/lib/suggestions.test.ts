import { describe, expect, it } from "vitest";
import { changesFrom, fmtError, fmtMiB, fmtValue, originOf, parseBudget } from "./suggestions";

describe("changesFrom", () => {
  it("pairs each override with the run's current value", () => {
    const run = { ppo: { batch_size: 32, mini_batch_size: 16 }, model: { gradient_checkpointing: false } };
    expect(changesFrom(run, { "ppo.batch_size": 128, "model.gradient_checkpointing": true, "generation.batch_size": 8 }))
      .toEqual([
        { key: "ppo.batch_size", from: 32, to: 128 },
        { key: "model.gradient_checkpointing", from: false, to: true },
        { key: "generation.batch_size", from: undefined, to: 8 },
      ]);
    expect(changesFrom(run, {})).toEqual([]);
  });
});

describe("fmtValue", () => {
  it("reads booleans as on/off and missing values as a dash", () => {
    expect(fmtValue(true)).toBe("on");
    expect(fmtValue(false)).toBe("off");
    expect(fmtValue(undefined)).toBe("—");
    expect(fmtValue("bf16")).toBe("bf16");
    expect(fmtValue(64)).toBe("64");
  });
});

describe("fmtMiB", () => {
  it("always shows MiB, grouped, with a decimal only for small values", () => {
    expect(fmtMiB(227.4)).toBe("227 MiB");
    expect(fmtMiB(12345.6)).toBe("12,346 MiB");
    expect(fmtMiB(3.25)).toBe("3.3 MiB");
    expect(fmtMiB(null)).toBe("—");
    expect(fmtMiB(Number.NaN)).toBe("—");
  });
});

describe("parseBudget", () => {
  it("accepts GiB in (0, 4096] and explains anything else", () => {
    expect(parseBudget(" 4 ")).toEqual({ gb: 4 });
    expect(parseBudget("0.5")).toEqual({ gb: 0.5 });
    expect(parseBudget("4096")).toEqual({ gb: 4096 });
    expect(parseBudget("")).toEqual({ error: "Enter a budget in GiB." });
    expect(parseBudget("lots")).toEqual({ error: "“lots” is not a number." });
    expect(parseBudget("0")).toEqual({ error: "The budget must be more than 0 GiB." });
    expect(parseBudget("5000")).toEqual({ error: "The budget must be at most 4096 GiB." });
  });
});

describe("deltas against row 0", () => {
  it("shows throughput as a factor and memory as a signed percentage", async () => {
    const { fmtPct, fmtRatio } = await import("./suggestions");
    expect(fmtRatio(1.4)).toBe("×1.40");
    expect(fmtRatio(0.913)).toBe("×0.91");
    expect(fmtPct(-30.2)).toBe("−30%");
    expect(fmtPct(410)).toBe("+410%");
    expect(fmtPct(0.3)).toBe("±0%");
    expect(fmtPct(Number.NaN)).toBe("—");
  });
});

describe("origin of a launched suggestion", () => {
  it("carries the source run, the number and the predictions the table showed", () => {
    const o = originOf({ runId: "r1", runName: "n", index: 2, changes: [], group: "same_math",
                         predictedPeakMb: 212.5, predictedTokensPerSec: 640 });
    expect(o).toEqual({ run_id: "r1", index: 2, group: "same_math", predicted_peak_mb: 212.5,
                        predicted_tokens_per_sec: 640 });
    expect(originOf({ runId: "r1", runName: "n", index: 1, changes: [] }).predicted_peak_mb).toBeNull();
  });
  it("says which way a prediction erred", () => {
    expect(fmtError(12.4)).toBe("+12% (predicted too high)");
    expect(fmtError(-8)).toBe("−8% (predicted too low)");
    expect(fmtError(0.2)).toBe("±0%");
    expect(fmtError(null)).toBe("—");
  });
});
