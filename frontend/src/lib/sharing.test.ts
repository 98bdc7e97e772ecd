import { describe, expect, it } from "vitest";
import { sharedDeviceNote } from "./sharing";

describe("sharedDeviceNote", () => {
  it("counts the other runs (the run page names them), names the device and the closed step range", () => {
    expect(sharedDeviceNote({ device: "cpu", run_ids: ["a", "b"], from_step: 3, to_step: 40 }, 59))
      .toBe("2 other runs shared this CPU during steps 3–40; timings are not comparable with a run that had it alone.");
  });
  it("says when the sharing still goes on", () => {
    expect(sharedDeviceNote({ device: "auto", run_ids: ["a"], from_step: 0, to_step: null }, 7))
      .toBe("1 other run shared this machine during steps 0–7 (still running); timings are not comparable with a run that had it alone.");
  });
});

describe("sharedDeviceNote on a finished run", () => {
  it("does not say still running", () => {
    expect(sharedDeviceNote({ device: "cpu", run_ids: ["a"], from_step: 0, to_step: null }, 5, false))
      .toBe("1 other run shared this CPU during steps 0–5; timings are not comparable with a run that had it alone.");
  });
});
