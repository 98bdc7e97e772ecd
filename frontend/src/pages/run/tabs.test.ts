import { describe, expect, it, vi } from "vitest";

vi.mock("uplot", () => ({ default: class {} })); // the tabs import the chart component; jsdom has no canvas

const { mergeRows } = await import("./TimingsTab");
const { parseSuggestions } = await import("./SuggestionsTab");

describe("mergeRows", () => {
  it("appends only live rows for steps the server does not have yet", () => {
    const server = [{ step: 0 }, { step: 1 }];
    const live = [{ step: 1 }, { step: 2 }, { step: 3 }];
    expect(mergeRows(server, live).map((r) => r.step)).toEqual([0, 1, 2, 3]);
    expect(mergeRows([], live).map((r) => r.step)).toEqual([1, 2, 3]);
  });
});

describe("parseSuggestions", () => {
  it("reads a list or an object with suggestions, tolerating unknown shapes", () => {
    const s = parseSuggestions({
      suggestions: [{ title: "Halve the batch", overrides: { "ppo.batch_size": 16 }, predicted_peak_mb: 900, tokens_per_sec: 1200 }],
    });
    expect(s).toEqual([{ title: "Halve the batch", overrides: { "ppo.batch_size": 16 }, predicted_peak_mb: 900,
                         predicted_tokens_per_sec: 1200, notes: undefined }]);
    expect(parseSuggestions([{ changes: { a: 1 } }])[0]!.title).toBe("Suggestion 1");
    expect(parseSuggestions({ nope: 1 })).toEqual([]);
    expect(parseSuggestions(null)).toEqual([]);
  });
});
