import { describe, expect, it } from "vitest";
import { fmtFrameValue, fromCollapsed, fromSpeedscope, fromTimings, hitTest, layout, search } from "./flame";

describe("flame trees", () => {
  it("merges collapsed stacks with shared prefixes", () => {
    const root = fromCollapsed("main;a;b 3\nmain;a 1\nmain;c 6\n");
    expect(root.value).toBe(10);
    const main = root.children[0]!;
    expect(main.name).toBe("main");
    const a = main.children.find((c) => c.name === "a")!;
    expect(a.value).toBe(4);
    expect(a.self).toBe(1);
  });

  it("reads a sampled speedscope profile", () => {
    const { root, unit } = fromSpeedscope({
      shared: { frames: [{ name: "step" }, { name: "generate" }, { name: "update" }] },
      profiles: [{ type: "sampled", unit: "seconds", samples: [[0, 1], [0, 2], [0, 1]], weights: [1, 2, 3] }],
    });
    expect(unit).toBe("seconds");
    const step = root.children[0]!;
    expect(step.value).toBe(6);
    expect(step.children.find((c) => c.name === "generate")!.value).toBe(4);
  });

  it("reads an evented speedscope profile (open/close events)", () => {
    const { root } = fromSpeedscope({
      shared: { frames: [{ name: "step" }, { name: "gen" }] },
      profiles: [{
        type: "evented", unit: "milliseconds",
        events: [
          { type: "O", frame: 0, at: 0 }, { type: "O", frame: 1, at: 2 },
          { type: "C", frame: 1, at: 7 }, { type: "C", frame: 0, at: 10 },
        ],
      }],
    });
    const step = root.children[0]!;
    expect(step.value).toBe(10);
    expect(step.self).toBe(5);
    expect(step.children[0]!.value).toBe(5);
  });

  it("builds a stage tree from timings with sub-stages nested", () => {
    const root = fromTimings([
      { stages: { generation: 2, scoring: 1, "scoring/reward": 0.4, update: 3 } },
      { stages: { generation: 2, scoring: 1, "scoring/reward": 0.6, update: 3 } },
    ]);
    expect(root.value).toBeCloseTo(12);
    const scoring = root.children.find((c) => c.name === "scoring")!;
    expect(scoring.value).toBeCloseTo(2);
    expect(scoring.children[0]!.name).toBe("scoring/reward");
    expect(scoring.children[0]!.value).toBeCloseTo(1);
  });
});

describe("layout, hit test and search", () => {
  const root = fromCollapsed("a;b 2\na;c 2\nd 4", "root");

  it("lays children side by side within their parent", () => {
    const rects = layout(root);
    const b = rects.find((r) => r.node.name === "b")!;
    const c = rects.find((r) => r.node.name === "c")!;
    expect(b.depth).toBe(2);
    expect(b.x0).toBeCloseTo(0);
    expect(b.x1).toBeCloseTo(0.25);
    expect(c.x0).toBeCloseTo(0.25);
  });

  it("zooms: the focused node spans the width, ancestors stay above", () => {
    const a = root.children.find((n) => n.name === "a")!;
    const rects = layout(a);
    expect(rects[0]!.node).toBe(root);
    const ra = rects.find((r) => r.node === a)!;
    expect([ra.x0, ra.x1]).toEqual([0, 1]);
    expect(rects.find((r) => r.node.name === "d")).toBeUndefined();
  });

  it("finds the rectangle under a pixel", () => {
    const rects = layout(root);
    expect(hitTest(rects, 10, 2 * 18 + 5, 400, 18)!.node.name).toBe("b");
    expect(hitTest(rects, 390, 18 + 5, 400, 18)!.node.name).toBe("d");
  });

  it("searches case-insensitively and sums matched weight once", () => {
    const r = search(root, "A");
    expect([...r.matches].map((n) => n.name)).toEqual(["a"]);
    expect(r.value).toBe(4);
    expect(search(root, "").matches.size).toBe(0);
  });
});

describe("fmtFrameValue", () => {
  it("writes profile times in seconds, not raw microseconds", () => {
    expect(fmtFrameValue(6.68e6, "microseconds")).toBe("6.68 s");
    expect(fmtFrameValue(2500, "ms")).toBe("2.5 s");
    expect(fmtFrameValue(0.004, "seconds")).toBe("4 ms");
  });
  it("keeps other units as they are", () => {
    expect(fmtFrameValue(12, "samples")).toBe("12 samples");
    expect(fmtFrameValue(12, "none")).toBe("12");
  });
});
