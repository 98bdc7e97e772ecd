/** Model FLOP utilisation per stage, from the run's perf/* series and its stage timings (pure).
 *
 * A stage's MFU over the run is weighted by its seconds: Σ mfu·s / Σ s (the total FLOPs over the
 * total time at peak), not the mean of per-step ratios. Its idle time is Σ s·(1 − mfu): the wall
 * time the stage spent below the device's peak. The formula and the peak are in rlhfkit/mfu.py. */
import { M } from "../api/client";
import type { Points } from "./series";

/** Stages with a FLOP model, and the contract's names of their MFU and time-per-token series. */
export const PERF_KEYS: Readonly<Record<string, { mfu: string; msPerToken: string }>> = {
  generation: { mfu: M.MFU_GENERATION, msPerToken: M.TIME_PER_TOKEN_GENERATION },
  scoring: { mfu: M.MFU_SCORING, msPerToken: M.TIME_PER_TOKEN_SCORING },
  advantages: { mfu: M.MFU_ADVANTAGES, msPerToken: M.TIME_PER_TOKEN_ADVANTAGES },
  update: { mfu: M.MFU_UPDATE, msPerToken: M.TIME_PER_TOKEN_UPDATE },
};
export const ALL_PERF_KEYS: readonly string[] = Object.values(PERF_KEYS).flatMap((k) => [k.mfu, k.msPerToken]);

export interface StageEfficiency {
  stage: string;
  /** seconds of the steps that reported an MFU */
  seconds: number;
  mfu: number | null;
  idle: number | null;
  msPerToken: number | null;
}

function byStep(p: Points | undefined): Map<number, number> {
  const m = new Map<number, number>();
  if (p) p.steps.forEach((s, i) => m.set(s, p.values[i]!));
  return m;
}

export function stageEfficiency(
  rows: readonly { step: number; stages: Record<string, number> }[],
  series: Readonly<Record<string, Points | undefined>>,
): StageEfficiency[] {
  return Object.entries(PERF_KEYS).map(([stage, k]) => {
    const mfu = byStep(series[k.mfu]);
    let seconds = 0;
    let busy = 0;
    for (const r of rows) {
      const s = r.stages[stage];
      const m = mfu.get(r.step);
      if (s === undefined || m === undefined || !Number.isFinite(m)) continue;
      seconds += s;
      busy += s * m;
    }
    const tpt = series[k.msPerToken]?.values.filter(Number.isFinite) ?? [];
    return {
      stage, seconds,
      mfu: seconds > 0 ? busy / seconds : null,
      idle: seconds > 0 ? seconds - busy : null,
      msPerToken: tpt.length ? tpt.reduce((a, b) => a + b, 0) / tpt.length : null,
    };
  });
}

/** The stage that left the device idle longest (wall time minus time at peak), or null. */
export function mostIdle(stages: readonly StageEfficiency[]): StageEfficiency | null {
  let best: StageEfficiency | null = null;
  for (const s of stages) if (s.idle !== null && (best === null || s.idle > (best.idle ?? -1))) best = s;
  return best;
}
