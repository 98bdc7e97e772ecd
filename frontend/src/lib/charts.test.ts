import { describe, expect, it } from "vitest";
import { METRIC_NAMES } from "../api/client";
import { ALL_STABILITY_KEYS, COMPARE_KEYS, STABILITY_CHARTS } from "./charts";

describe("chart definitions", () => {
  it("draw only metrics of the generated contract", () => {
    const known = new Set<string>(METRIC_NAMES);
    const used = [...ALL_STABILITY_KEYS, ...COMPARE_KEYS];
    expect(used.length).toBeGreaterThanOrEqual(22);
    expect(used.filter((k) => !known.has(k))).toEqual([]);
  });

  it("give every chart a unique id", () => {
    const ids = STABILITY_CHARTS.map((c) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
