import { describe, expect, it } from "vitest";
import { configDiff, flatten, toYaml } from "./yaml";

describe("toYaml", () => {
  it("writes nested config readably and quotes what YAML would misread", () => {
    const y = toYaml({ name: "smoke", tags: ["a", "b"], ppo: { lr: 0.0003, clip: true, s: "yes" }, empty: [], x: null });
    expect(y).toBe(
      'name: smoke\ntags:\n  - a\n  - b\nppo:\n  lr: 0.0003\n  clip: true\n  s: "yes"\nempty: []\nx: null',
    );
  });
});

describe("configDiff", () => {
  it("flags keys whose values differ across runs", () => {
    expect(flatten({ a: { b: 1 }, c: [1] })).toEqual({ "a.b": 1, c: [1] });
    const rows = configDiff([{ a: { b: 1 }, c: 2 }, { a: { b: 2 }, c: 2 }]);
    expect(rows).toEqual([
      { key: "a.b", values: [1, 2], differs: true },
      { key: "c", values: [2, 2], differs: false },
    ]);
  });
});
