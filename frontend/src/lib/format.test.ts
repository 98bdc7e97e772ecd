import { describe, expect, it } from "vitest";
import { fmtAxis, fmtSeconds } from "./format";

describe("fmtAxis", () => {
  it("uses the decimals the tick spacing needs", () => {
    expect(fmtAxis(7.3245, 0.0005)).toBe("7.3245");
    expect(fmtAxis(7.325, 0.0005)).toBe("7.3250");
    expect(fmtAxis(20, 5)).toBe("20");
    expect(fmtAxis(0.25, 0.05)).toBe("0.25");
  });

  it("keeps every digit of a tick spacing like 0.025 (no 0.03 / 0.07 for 0.025 / 0.075)", () => {
    expect([0.025, 0.05, 0.075].map((v) => fmtAxis(v, 0.025))).toEqual(["0.025", "0.050", "0.075"]);
    expect([2.325, 2.35, 2.375].map((v) => fmtAxis(v, 0.025))).toEqual(["2.325", "2.350", "2.375"]);
    expect(fmtAxis(12.5, 2.5)).toBe("12.5");
    expect([2.25e-4, 2.5e-4].map((v) => fmtAxis(v, 2.5e-5))).toEqual(["2.25e-4", "2.50e-4"]);
  });

  it("switches to exponents for tiny and huge values", () => {
    expect(fmtAxis(3e-4, 1e-4)).toBe("3e-4");
    expect(fmtAxis(2.5e-4, 5e-5)).toBe("2.5e-4");
    expect(fmtAxis(1.2e6, 2e5)).toBe("1.2e+6");
    expect(fmtAxis(0, 1)).toBe("0");
  });
});

describe("fmtSeconds", () => {
  it("picks µs, ms or s with three significant digits", () => {
    expect(fmtSeconds(0.000066)).toBe("66 µs");
    expect(fmtSeconds(0.0003123)).toBe("312 µs");
    expect(fmtSeconds(0.036376)).toBe("36.4 ms");
    expect(fmtSeconds(0.19101)).toBe("191 ms");
    expect(fmtSeconds(1.2149)).toBe("1.21 s");
    expect(fmtSeconds(0)).toBe("0 s");
  });
  it("shows a dash for missing or non-finite values", () => {
    expect(fmtSeconds(null)).toBe("—");
    expect(fmtSeconds(undefined)).toBe("—");
    expect(fmtSeconds(Number.NaN)).toBe("—");
  });
});
