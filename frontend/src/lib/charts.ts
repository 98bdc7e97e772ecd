/** Which metrics the Stability and Compare views draw, and how. Names come from the generated
 * contract (rlhfkit/metrics.py → OpenAPI → src/client/contract.ts): a renamed metric is a type error. */
import { M, type MetricName } from "../api/client";

export interface ChartDef {
  id: string;
  title: string;
  lines: { key: MetricName; label?: string }[];
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
  { id: "value_loss", title: "Value loss", lines: [{ key: M.VALUE_LOSS }] },
  { id: "clipfrac", title: "Clip fractions", lines: [{ key: M.POLICY_CLIPFRAC, label: "policy" }, { key: M.VALUE_CLIPFRAC, label: "value" }] },
  { id: "approx_kl", title: "Approx KL (old‖new)", lines: [{ key: M.APPROX_KL }] },
  { id: "grad_norm", title: "Gradient norm", lines: [{ key: M.GRAD_NORM }] },
  { id: "explained_var", title: "Explained variance", lines: [{ key: M.EXPLAINED_VAR }] },
  { id: "response_len", title: "Response length", lines: [{ key: M.RESPONSE_LEN }] },
  { id: "lr", title: "Learning rate", lines: [{ key: M.LEARNING_RATE }] },
  { id: "tokens_per_sec", title: "Throughput", lines: [{ key: M.TOKENS_PER_SEC }] },
];

export function chartKeys(def: ChartDef): MetricName[] {
  const out = def.lines.map((l) => l.key);
  if (def.band) out.push(...def.band);
  if (def.ref) out.push(def.ref.key);
  return out;
}

export const ALL_STABILITY_KEYS: MetricName[] = [...new Set(STABILITY_CHARTS.flatMap(chartKeys))];

export const COMPARE_KEYS: MetricName[] = [
  M.EVAL_REWARD, M.REWARD_MEAN, M.KL_K1, M.ENTROPY, M.POLICY_LOSS, M.VALUE_LOSS, M.POLICY_CLIPFRAC,
  M.GRAD_NORM, M.RESPONSE_LEN, M.TOKENS_PER_SEC,
];
