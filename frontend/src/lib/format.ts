/** Number, time and duration formatting (every number shown with its unit). */

export function fmtNum(v: number | null | undefined, digits = 3): string {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "-∞";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  return Number(v.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

export function fmtDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  if (m < 60) return `${m} min ${s} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A short time measurement with three significant digits: 420 µs, 36.4 ms, 1.21 s (durations of
 * minutes and hours read better with fmtDuration). */
export function fmtSeconds(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const a = Math.abs(seconds);
  if (a === 0) return "0 s";
  if (a < 1e-3) return `${Number((seconds * 1e6).toPrecision(3))} µs`;
  if (a < 1) return `${Number((seconds * 1e3).toPrecision(3))} ms`;
  return `${Number(seconds.toPrecision(3))} s`;
}

export function fmtMB(mb: number | null | undefined): string {
  if (mb === null || mb === undefined) return "—";
  return mb >= 1024 ? `${(mb / 1024).toFixed(2)} GiB` : `${mb.toFixed(1)} MiB`;
}

export function fmtBytes(b: number): string {
  if (b < 1024) return `${b} B`;
  if (b < 1024 ** 2) return `${(b / 1024).toFixed(1)} KiB`;
  return fmtMB(b / 1024 ** 2);
}

export function parseTime(iso: string | null | undefined): number | null {
  if (!iso) return null;
  // the API's datetimes are UTC; SQLite may drop the offset
  const t = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  return Number.isNaN(t) ? null : t / 1000;
}

export function fmtAgo(iso: string | null | undefined, now = Date.now() / 1000): string {
  const t = parseTime(iso);
  if (t === null) return "—";
  return `${fmtDuration(Math.max(0, now - t))} ago`;
}

/** Axis labels with as many decimals as the tick spacing needs (7.3245, 7.3250 stay distinct), in
 * exponent form for very small or very large values (3e-4, 1.2e6). */
export function fmtAxis(v: number | null, incr: number): string {
  if (v === null || !Number.isFinite(v)) return "";
  const a = Math.abs(v);
  if (a === 0) return "0";
  const step = Math.abs(incr) || a;
  const mag = Math.floor(Math.log10(step) + 1e-9);
  // digits of the spacing past its leading one: 0.025 has one more than 0.05 (2.325, 2.350, 2.375)
  const extra = decimalsOf(step / 10 ** mag);
  if (a < 1e-3 || a >= 1e6) {
    const digits = Math.max(0, Math.min(6, Math.floor(Math.log10(a) + 1e-9) - mag + extra));
    return v.toExponential(digits);
  }
  const decimals = Math.max(0, Math.min(10, -mag + extra));
  return v.toFixed(decimals);
}

/** Decimals needed to write ``x`` (a tick spacing's mantissa, 1 ≤ x < 10) exactly, up to 4. */
function decimalsOf(x: number): number {
  for (let d = 0; d < 4; d++) {
    const scaled = x * 10 ** d;
    if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * 10 ** d) return d;
  }
  return 4;
}
