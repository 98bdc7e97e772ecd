/** Which metrics the Stability tab draws, and how (names from rlhfkit/metrics.py via the contract). */

export interface ChartDef {
  id: string;
  title: string;
  lines: { key: string; label?: string }[];
  /** Min/max band around the first line. */
  band?: [low: string, high: string];
  /** Key whose latest value is drawn as a dashed reference line. */
  ref?: { key: string; label: string };
}

export const STABILITY_CHARTS: ChartDef[] = [
  { id: "reward", title: "Reward (mean, min–max band)", lines: [{ key: "reward/mean", label: "mean" }],
    band: ["reward/min", "reward/max"] },
  { id: "kl", title: "KL to reference", lines: [{ key: "kl/k1", label: "k1" }, { key: "kl/k3", label: "k3" }],
    ref: { key: "kl/target", label: "KL target" } },
  { id: "kl_coef", title: "KL coefficient β", lines: [{ key: "kl/coef" }] },
  { id: "entropy", title: "Policy entropy", lines: [{ key: "policy/entropy" }] },
  { id: "policy_loss", title: "Policy loss", lines: [{ key: "loss/policy" }] },
  { id: "value_loss", title: "Value loss", lines: [{ key: "loss/value" }] },
  { id: "clipfrac", title: "Clip fractions", lines: [{ key: "policy/clipfrac", label: "policy" }, { key: "value/clipfrac", label: "value" }] },
  { id: "approx_kl", title: "Approx KL (old‖new)", lines: [{ key: "policy/approx_kl" }] },
  { id: "grad_norm", title: "Gradient norm", lines: [{ key: "optim/grad_norm" }] },
  { id: "explained_var", title: "Explained variance", lines: [{ key: "value/explained_variance" }] },
  { id: "response_len", title: "Response length", lines: [{ key: "response/length" }] },
  { id: "lr", title: "Learning rate", lines: [{ key: "optim/lr" }] },
  { id: "tokens_per_sec", title: "Throughput", lines: [{ key: "perf/tokens_per_sec" }] },
];

export function chartKeys(def: ChartDef): string[] {
  const out = def.lines.map((l) => l.key);
  if (def.band) out.push(...def.band);
  if (def.ref) out.push(def.ref.key);
  return out;
}

export const ALL_STABILITY_KEYS: string[] = [...new Set(STABILITY_CHARTS.flatMap(chartKeys))];

export const COMPARE_KEYS: string[] = [
  "reward/mean", "kl/k1", "policy/entropy", "loss/policy", "loss/value", "policy/clipfrac",
  "optim/grad_norm", "response/length", "perf/tokens_per_sec",
];

declare global {
  interface Window {
    /** Render counts per chart id (read by benchmarks/bench_ui.py). */
    __rlhfkitRenders?: Record<string, number>;
  }
}

/** Count a render of chart `id` (cheap; lets the benchmark check that live updates stay local). */
export function countRender(id: string): void {
  const w = typeof window === "undefined" ? undefined : window;
  if (!w) return;
  const r = (w.__rlhfkitRenders ??= {});
  r[id] = (r[id] ?? 0) + 1;
}
