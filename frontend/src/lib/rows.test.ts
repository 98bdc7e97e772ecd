import { describe, expect, it } from "vitest";
import { mergeRows } from "./rows";

describe("mergeRows", () => {
  it("appends only live rows for steps the server does not have yet", () => {
    const server = [{ step: 0 }, { step: 1 }];
    const live = [{ step: 1 }, { step: 2 }, { step: 3 }];
    expect(mergeRows(server, live).map((r) => r.step)).toEqual([0, 1, 2, 3]);
    expect(mergeRows([], live).map((r) => r.step)).toEqual([1, 2, 3]);
  });
});
