import { describe, expect, it } from "vitest";
import { M } from "../api/client";
import { alertChartId, algorithmLabel, chartKeys, chartsFor, metricTitle, runTraits, STABILITY_CHARTS } from "./charts";

const ppo = { algorithm: "ppo", ppo: {}, generation: { samples_per_prompt: 1 } };
const grpo = { algorithm: "grpo", ppo: {}, generation: { samples_per_prompt: 4 } };

describe("chartsFor", () => {
  it("leaves the value charts and the value clip line out of a critic-free run", () => {
    const charts = chartsFor(runTraits(grpo));
    const ids = charts.map((c) => c.id);
    expect(ids).not.toContain("value_loss");
    expect(ids).not.toContain("explained_var");
    expect(ids).toEqual(expect.arrayContaining(["reward", "group_std", "zero_std", "clipfrac", "length_cap"]));
    const keys = charts.flatMap(chartKeys);
    expect(keys).not.toContain(M.VALUE_CLIPFRAC);
    expect(keys).toEqual(expect.arrayContaining([M.CLIPFRAC_LOW, M.CLIPFRAC_HIGH, M.FRAC_ZERO_STD]));
  });

  it("keeps every PPO chart and drops the group charts of a one-sample PPO run", () => {
    const ids = chartsFor(runTraits(ppo)).map((c) => c.id);
    expect(ids).toEqual(expect.arrayContaining(["value_loss", "explained_var"]));
    expect(ids).not.toContain("group_std");
  });

  it("keeps everything for a run whose config says nothing (TRL, OpenRLHF, external)", () => {
    expect(chartsFor(runTraits({ learning_rate: 1e-5 }))).toEqual(STABILITY_CHARTS);
    expect(chartsFor(runTraits(undefined))).toEqual(STABILITY_CHARTS);
  });

  it("knows a TRL GRPO or RLOO run from the trainer its adapter recorded", () => {
    const ids = chartsFor(runTraits({ trainer: "grpo", args: {} })).map((c) => c.id);
    expect(ids).not.toContain("value_loss");
    expect(ids).toContain("zero_std");
    expect(algorithmLabel({ trainer: "rloo", args: {} })).toBe("RLOO");
  });

  it("reads a native config from before the algorithm field as PPO", () => {
    expect(runTraits({ ppo: {}, generation: {} })).toEqual({ algorithm: "ppo", critic: true, groups: false });
  });
});

describe("algorithmLabel", () => {
  it("names the algorithm and its group size", () => {
    expect(algorithmLabel(grpo)).toBe("GRPO (G = 4)");
    expect(algorithmLabel({ ...grpo, algorithm: "dr_grpo" })).toBe("Dr. GRPO (G = 4)");
    expect(algorithmLabel(ppo)).toBe("PPO");
    expect(algorithmLabel({ name: "trl" })).toBe("—");
  });
});

describe("metricTitle", () => {
  it("names a metric as the run page's charts do", () => {
    expect(metricTitle(M.KL_K1)).toBe("KL to reference (k1)");
    expect(metricTitle(M.TOKENS_PER_SEC)).toBe("Throughput");
    expect(metricTitle(M.REWARD_MEAN)).toBe("Reward (mean)"); // no band on Compare
  });
  it("falls back to the contract description, then the key", () => {
    expect(metricTitle("x/unknown", "tokens clipped at the cap. More text")).toBe("Tokens clipped at the cap");
    expect(metricTitle("x/unknown")).toBe("x/unknown");
  });
});

describe("alertChartId", () => {
  const charts = chartsFor(runTraits({ algorithm: "ppo" }));
  it("puts an alert on the chart that plots its metric", () => {
    const id = alertChartId(M.KL_K1, charts);
    expect(id).toBeDefined();
    expect(chartKeys(charts.find((d) => d.id === id)!)).toContain(M.KL_K1);
  });
  it("puts an alert whose metric no chart plots (or none) on the reward chart: every alert gets a marker", () => {
    const plotted = new Set<string>(charts.flatMap(chartKeys));
    expect(plotted.has("policy/ratio_max")).toBe(false);
    expect(alertChartId("policy/ratio_max", charts)).toBe("reward");
    expect(alertChartId(null, charts)).toBe("reward");
  });
});
