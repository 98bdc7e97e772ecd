import { describe, expect, it } from "vitest";
import { alignOnSteps, coverEnd, ema, forLogScale, mergeLive } from "./series";

describe("mergeLive", () => {
  it("appends live points after the server history without gap or duplicate", () => {
    const server = { steps: [0, 1, 2], values: [1, 2, 3] };
    const live = { steps: [1, 2, 3, 4], values: [20, 30, 4, 5] };
    const m = mergeLive(server, live);
    expect(m.steps).toEqual([0, 1, 2, 3, 4]);
    expect(m.values).toEqual([1, 2, 3, 4, 5]);
  });

  it("treats a downsampled bucket as covering up to its latest min/max step", () => {
    // buckets labelled 0 and 50; the second bucket's max sits at step 97
    const server = {
      steps: [0, 50], values: [1, 2], min: [0, 1], max: [2, 9],
      min_step: [3, 60], max_step: [10, 97], downsampled: true,
    };
    expect(coverEnd(server)).toBe(97);
    const m = mergeLive(server, { steps: [96, 97, 98, 99], values: [5, 6, 7, 8] });
    expect(m.steps).toEqual([0, 50, 98, 99]);
    expect(m.values).toEqual([1, 2, 7, 8]);
    expect(m.min).toEqual([0, 1, 7, 8]);
    expect(m.max).toEqual([2, 9, 7, 8]);
  });

  it("works with only live points, sorting and keeping the last value per step", () => {
    const m = mergeLive(undefined, { steps: [2, 0, 1, 2], values: [3, 0, 1, 33] });
    expect(m.steps).toEqual([0, 1, 2]);
    expect(m.values).toEqual([0, 1, 33]);
  });

  it("returns the server series untouched when nothing is live", () => {
    const server = { steps: [0], values: [1] };
    expect(mergeLive(server, undefined).values).toBe(server.values);
    expect(mergeLive(undefined, undefined).steps).toEqual([]);
  });
});

describe("ema", () => {
  it("is the identity at weight 0", () => {
    expect(ema([1, 2, 3], 0)).toEqual([1, 2, 3]);
  });

  it("is debiased: a constant series stays constant", () => {
    for (const v of ema([5, 5, 5, 5], 0.9)) expect(v).toBeCloseTo(5, 10);
  });

  it("matches the recurrence", () => {
    const w = 0.5;
    const out = ema([0, 10], w);
    expect(out[0]).toBeCloseTo(0);
    // last = 0.5*(0.5*0 + 0.5*0) ... biased 2.5+... : (0.5*0 + 0.5*0)=0 then 0*0.5+0.5*10=5, debias 1-0.25
    expect(out[1]).toBeCloseTo(5 / 0.75);
  });

  it("passes nulls and NaN through without disturbing the average", () => {
    const out = ema([1, null, Number.NaN, 1], 0.8);
    expect(out[1]).toBeNull();
    expect(out[2]).toBeNaN();
    expect(out[3]).toBeCloseTo(1);
  });
});

describe("alignOnSteps", () => {
  it("puts several series on the union of their steps with nulls for gaps", () => {
    const [x, a, b] = alignOnSteps([
      { steps: [0, 2], values: [1, 3] },
      { steps: [1, 2], values: [10, 30] },
    ]);
    expect(x).toEqual([0, 1, 2]);
    expect(a).toEqual([1, null, 3]);
    expect(b).toEqual([null, 10, 30]);
  });
});

describe("forLogScale", () => {
  it("drops non-positive values", () => {
    expect(forLogScale([1, 0, -1, null, 2])).toEqual([1, null, null, null, 2]);
  });
});
