import { describe, expect, it } from "vitest";
import { fmtAxis } from "./format";

describe("fmtAxis", () => {
  it("uses the decimals the tick spacing needs", () => {
    expect(fmtAxis(7.3245, 0.0005)).toBe("7.3245");
    expect(fmtAxis(7.325, 0.0005)).toBe("7.3250");
    expect(fmtAxis(20, 5)).toBe("20");
    expect(fmtAxis(0.25, 0.05)).toBe("0.25");
  });

  it("switches to exponents for tiny and huge values", () => {
    expect(fmtAxis(3e-4, 1e-4)).toBe("3e-4");
    expect(fmtAxis(2.5e-4, 5e-5)).toBe("2.5e-4");
    expect(fmtAxis(1.2e6, 2e5)).toBe("1.2e+6");
    expect(fmtAxis(0, 1)).toBe("0");
  });
});
