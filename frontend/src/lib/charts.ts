/** Which metrics the Stability and Compare views draw, and how. Names come from the generated
 * contract (rlhfkit/metrics.py → OpenAPI → src/client/contract.ts): a renamed metric is a type error. */
import { M, type MetricName } from "../api/client";

/** What a run has, as far as the charts care: a value function (PPO) and groups of G responses per
 * prompt (samples_per_prompt >= 2). Metrics that need one are never emitted without it. */
export interface RunTraits {
  algorithm: string | null;
  critic: boolean;
  groups: boolean;
}

type Needs = "critic" | "groups";

export interface ChartDef {
  id: string;
  title: string;
  lines: { key: MetricName; label?: string; needs?: Needs }[];
  /** Drawn only for runs that have this (value charts need a critic). */
  needs?: Needs;
  /** Min/max band around the first line. */
  band?: [low: MetricName, high: MetricName];
  /** Key whose latest value is drawn as a dashed reference line. */
  ref?: { key: MetricName; label: string };
  /** Mark each measured step (evaluations come every few steps). */
  points?: boolean;
}

/** Metrics measured at some steps only (each point is marked on the charts). */
export const SPARSE_KEYS: ReadonlySet<MetricName> = new Set([M.EVAL_REWARD]);

// The README's headline number first: the reward on held-out prompts, at each evaluation.
export const STABILITY_CHARTS: ChartDef[] = [
  { id: "eval_reward", title: "Held-out reward (eval, one point per evaluation)",
    lines: [{ key: M.EVAL_REWARD, label: "eval" }], points: true },
  { id: "reward", title: "Reward (mean, min–max band)", lines: [{ key: M.REWARD_MEAN, label: "mean" }],
    band: [M.REWARD_MIN, M.REWARD_MAX] },
  { id: "kl", title: "KL to reference", lines: [{ key: M.KL_K1, label: "k1" }, { key: M.KL_K3, label: "k3" }],
    ref: { key: M.KL_TARGET, label: "KL target" } },
  { id: "kl_coef", title: "KL coefficient β", lines: [{ key: M.KL_COEF }] },
  { id: "entropy", title: "Policy entropy", lines: [{ key: M.ENTROPY }] },
  { id: "policy_loss", title: "Policy loss", lines: [{ key: M.POLICY_LOSS }] },
  { id: "value_loss", title: "Value loss", lines: [{ key: M.VALUE_LOSS }], needs: "critic" },
  { id: "clipfrac", title: "Clip fractions", lines: [{ key: M.POLICY_CLIPFRAC, label: "policy" },
    { key: M.CLIPFRAC_LOW, label: "low" }, { key: M.CLIPFRAC_HIGH, label: "high" },
    { key: M.VALUE_CLIPFRAC, label: "value", needs: "critic" }] },
  { id: "group_std", title: "Reward spread within a prompt's group", lines: [{ key: M.REWARD_GROUP_STD }], needs: "groups" },
  { id: "zero_std", title: "Groups with no signal (all rewards equal)", lines: [{ key: M.FRAC_ZERO_STD }], needs: "groups" },
  { id: "approx_kl", title: "Approx KL (old‖new)", lines: [{ key: M.APPROX_KL }] },
  { id: "grad_norm", title: "Gradient norm", lines: [{ key: M.GRAD_NORM }] },
  { id: "explained_var", title: "Explained variance", lines: [{ key: M.EXPLAINED_VAR }], needs: "critic" },
  { id: "response_len", title: "Response length (mean, min–max band)", lines: [{ key: M.RESPONSE_LEN, label: "mean" }],
    band: [M.RESPONSE_LEN_MIN, M.RESPONSE_LEN_MAX] },
  { id: "length_cap", title: "Responses cut at the length cap", lines: [{ key: M.RESPONSE_CLIPPED }] },
  { id: "lr", title: "Learning rate", lines: [{ key: M.LEARNING_RATE }] },
  { id: "tokens_per_sec", title: "Throughput", lines: [{ key: M.TOKENS_PER_SEC }] },
];

export function chartKeys(def: ChartDef): MetricName[] {
  const out = def.lines.map((l) => l.key);
  if (def.band) out.push(...def.band);
  if (def.ref) out.push(def.ref.key);
  return out;
}

/** The chart an alert's marker goes on: the one that plots the alert's metric, else the reward
 * chart (then the first), so that every alert with a step has a marker somewhere on the page. */
export function alertChartId(metric: string | null | undefined, charts: readonly ChartDef[]): string | undefined {
  const hit = metric ? charts.find((d) => (chartKeys(d) as string[]).includes(metric)) : undefined;
  return (hit ?? charts.find((d) => d.id === "reward") ?? charts[0])?.id;
}


/** A run's traits from its stored config. Runs without an rlhfkit config (TRL, OpenRLHF, external)
 * keep every chart: we cannot tell, and an empty chart is better than a hidden one there. */
export function runTraits(config: Record<string, unknown> | null | undefined): RunTraits {
  const algorithm = typeof config?.algorithm === "string" ? config.algorithm : null;
  const gen = config?.generation as { samples_per_prompt?: unknown } | undefined;
  const g = typeof gen?.samples_per_prompt === "number" ? gen.samples_per_prompt : null;
  // a TRL run registered by the adapter stores {"trainer": "grpo" | "rloo" | "ppo" | ..., "args": ...}
  const trainer = typeof config?.trainer === "string" ? config.trainer.toLowerCase() : null;
  if (algorithm === null && (trainer === "grpo" || trainer === "rloo")) {
    return { algorithm: trainer, critic: false, groups: true };
  }
  if (algorithm === null) {
    // a native config from before the field existed is PPO; anything else is unknown
    const native = config !== null && config !== undefined && "ppo" in config && "generation" in config;
    return { algorithm: native ? "ppo" : null, critic: true, groups: !native || (g ?? 1) >= 2 };
  }
  return { algorithm, critic: algorithm === "ppo", groups: (g ?? 1) >= 2 };
}

const ALGORITHM_NAMES: Record<string, string> = {
  ppo: "PPO", grpo: "GRPO", dr_grpo: "Dr. GRPO", rloo: "RLOO", reinforce_pp: "REINFORCE++",
};

/** "GRPO (G = 4)", "PPO", or "—" for a run whose config does not say. */
export function algorithmLabel(config: Record<string, unknown> | null | undefined): string {
  const t = runTraits(config);
  if (t.algorithm === null) return "—";
  const name = ALGORITHM_NAMES[t.algorithm] ?? t.algorithm;
  const g = (config?.generation as { samples_per_prompt?: unknown } | undefined)?.samples_per_prompt;
  return typeof g === "number" && g > 1 ? `${name} (G = ${g})` : name;
}

function has(traits: RunTraits, needs: Needs | undefined): boolean {
  return needs === undefined || traits[needs];
}

/** The charts this run can fill: PPO-only charts (value loss, explained variance) are left out of a
 * critic-free run instead of being drawn empty, and lines likewise. */
export function chartsFor(traits: RunTraits, charts: ChartDef[] = STABILITY_CHARTS): ChartDef[] {
  return charts.filter((c) => has(traits, c.needs) && c.lines.some((l) => has(traits, l.needs)))
    .map((c) => (c.lines.every((l) => has(traits, l.needs)) ? c : { ...c, lines: c.lines.filter((l) => has(traits, l.needs)) }));
}

export const COMPARE_KEYS: MetricName[] = [
  M.EVAL_REWARD, M.REWARD_MEAN, M.KL_K1, M.ENTROPY, M.POLICY_LOSS, M.VALUE_LOSS, M.POLICY_CLIPFRAC,
  M.GRAD_NORM, M.RESPONSE_LEN, M.TOKENS_PER_SEC,
];

/** A metric's title as the run page's charts name it ("KL to reference (k1)"); a metric no run chart
 * draws falls back to its contract description (up to the first period or parenthesis), then its key. */
export function metricTitle(key: string, description?: string, charts: ChartDef[] = STABILITY_CHARTS): string {
  const def = charts.find((c) => c.lines.some((l) => l.key === key));
  if (def) {
    const line = def.lines.find((l) => l.key === key)!;
    const title = def.band ? def.title.replace(", min–max band", "") : def.title; // a band is drawn on the run page only
    return def.lines.length > 1 && line.label ? `${title} (${line.label})` : title;
  }
  const short = description?.split(/[.(;]/)[0]?.trim();
  return short ? short[0]!.toUpperCase() + short.slice(1) : key;
}
