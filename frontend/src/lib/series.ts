/** Pure series arithmetic for the charts: merging the server's downsampled history with points that
 * arrived live, EMA smoothing, and aligning several runs' series on one step axis. */

/** A metric's points on a step axis. `min`/`max` are per-bucket extremes of a downsampled series. */
export interface Points {
  steps: number[];
  values: number[];
  min?: number[] | null;
  max?: number[] | null;
}

/** The server's view of one key (the API's `Series`, only the fields the charts read). */
export interface ServerSeries extends Points {
  min_step?: number[] | null;
  max_step?: number[] | null;
  downsampled?: boolean;
}

/** Last step the server series accounts for. A downsampled bucket is labelled with its first step,
 * but its min/max may sit later, so the cover ends at the largest step we know of in the last bucket. */
export function coverEnd(s: ServerSeries | undefined): number {
  if (!s || s.steps.length === 0) return -Infinity;
  const i = s.steps.length - 1;
  return Math.max(s.steps[i]!, s.min_step?.[i] ?? -Infinity, s.max_step?.[i] ?? -Infinity);
}

/** Server history plus the live points it does not cover yet: no gap, no duplicate step.
 * Live points at or before the server's cover are dropped (the server already has them, possibly
 * folded into a bucket); later ones are appended in step order, the last value for a step winning. */
export function mergeLive(server: ServerSeries | undefined, live: Points | undefined): Points {
  const base: Points = server
    ? { steps: server.steps, values: server.values, min: server.min ?? null, max: server.max ?? null }
    : { steps: [], values: [], min: null, max: null };
  if (!live || live.steps.length === 0) return base;
  const end = coverEnd(server);
  const tail = new Map<number, number>();
  for (let i = 0; i < live.steps.length; i++) {
    const st = live.steps[i]!;
    if (st > end) tail.set(st, live.values[i]!);
  }
  if (tail.size === 0) return base;
  const extraSteps = [...tail.keys()].sort((a, b) => a - b);
  const extraValues = extraSteps.map((s) => tail.get(s)!);
  return {
    steps: [...base.steps, ...extraSteps],
    values: [...base.values, ...extraValues],
    // live points are raw: their band is the point itself
    min: base.min ? [...base.min, ...extraValues] : null,
    max: base.max ? [...base.max, ...extraValues] : null,
  };
}

/** Debiased exponential moving average (TensorBoard's smoothing): `weight` 0 = raw, 0.99 = very smooth.
 * Non-finite values pass through and do not disturb the average. */
export function ema(values: readonly (number | null)[], weight: number): (number | null)[] {
  if (weight <= 0) return values.slice();
  const w = Math.min(weight, 0.999);
  let last = 0;
  let n = 0;
  return values.map((v) => {
    if (v === null || !Number.isFinite(v)) return v;
    last = last * w + (1 - w) * v;
    n += 1;
    return last / (1 - Math.pow(w, n));
  });
}

/** Several series on the union of their steps (uPlot's aligned data): `[steps, ys0, ys1, ...]`,
 * `null` where a series has no point at that step. */
export function alignOnSteps(series: readonly Points[]): [number[], ...(number | null)[][]] {
  const all = new Set<number>();
  for (const s of series) for (const st of s.steps) all.add(st);
  const steps = [...all].sort((a, b) => a - b);
  const index = new Map(steps.map((s, i) => [s, i]));
  const ys = series.map((s) => {
    const out: (number | null)[] = new Array<number | null>(steps.length).fill(null);
    s.steps.forEach((st, i) => {
      out[index.get(st)!] = s.values[i] ?? null;
    });
    return out;
  });
  return [steps, ...ys];
}

/** Values made safe for a log axis: non-positive values become null (not drawn). */
export function forLogScale(values: readonly (number | null)[]): (number | null)[] {
  return values.map((v) => (v !== null && v > 0 ? v : null));
}
