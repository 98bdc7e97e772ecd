import { describe, expect, it } from "vitest";
import { M } from "../api/client";
import { mostIdle, stageEfficiency } from "./mfu";

describe("stageEfficiency", () => {
  const rows = [
    { step: 0, stages: { generation: 2, update: 1 } },
    { step: 1, stages: { generation: 2, update: 3 } },
  ];
  const series = {
    [M.MFU_GENERATION]: { steps: [0, 1], values: [0.1, 0.3] },
    [M.MFU_UPDATE]: { steps: [0, 1], values: [0.5, 0.5] },
    [M.TIME_PER_TOKEN_UPDATE]: { steps: [0, 1], values: [2, 4] },
  };

  it("weights MFU by stage seconds and counts idle time below peak", () => {
    const out = stageEfficiency(rows, series);
    const gen = out.find((s) => s.stage === "generation")!;
    expect(gen.mfu).toBeCloseTo((2 * 0.1 + 2 * 0.3) / 4);
    expect(gen.idle).toBeCloseTo(4 - 0.8);
    const upd = out.find((s) => s.stage === "update")!;
    expect(upd.mfu).toBeCloseTo(0.5);
    expect(upd.idle).toBeCloseTo(2);
    expect(upd.msPerToken).toBeCloseTo(3);
    expect(out.find((s) => s.stage === "scoring")!.mfu).toBeNull();
    expect(mostIdle(out)!.stage).toBe("generation");
  });
});
