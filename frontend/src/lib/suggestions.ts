/** Pure helpers of the Suggestions tab: a candidate's changes against the run's config, memory in
 * MiB, and the GiB budget the user types. */
import { getAt } from "./schemaForm";

export interface Change {
  key: string;
  from: unknown;
  to: unknown;
}

/** Each override as "key: run's value → candidate's value", in the order the server sent them. */
export function changesFrom(runConfig: unknown, overrides: Record<string, unknown>): Change[] {
  return Object.entries(overrides).map(([key, to]) => ({ key, from: getAt(runConfig, key.split(".")), to }));
}

/** A config value as it reads in a table cell: booleans as on/off, missing as "—". */
export function fmtValue(v: unknown): string {
  if (v === undefined || v === null) return "—";
  if (typeof v === "boolean") return v ? "on" : "off";
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

/** Memory always in MiB (the unit the predictions are made in), grouped: "1,234 MiB". */
export function fmtMiB(mb: number | null | undefined): string {
  if (mb === null || mb === undefined || !Number.isFinite(mb)) return "—";
  return `${mb.toLocaleString("en-US", { maximumFractionDigits: mb < 10 ? 1 : 0 })} MiB`;
}

export const MAX_BUDGET_GB = 4096;

/** The budget field's text as GiB, or an error message (the server enforces the same range). */
export function parseBudget(text: string): { gb: number } | { error: string } {
  const t = text.trim();
  if (t === "") return { error: "Enter a budget in GiB." };
  const gb = Number(t);
  if (!Number.isFinite(gb)) return { error: `“${t}” is not a number.` };
  if (gb <= 0) return { error: "The budget must be more than 0 GiB." };
  if (gb > MAX_BUDGET_GB) return { error: `The budget must be at most ${MAX_BUDGET_GB} GiB.` };
  return { gb };
}

/** A candidate's throughput against row 0: "×1.27" (two decimals, so a 2% tie reads as one). */
export function fmtRatio(r: number): string {
  return Number.isFinite(r) ? `×${r.toFixed(2)}` : "—";
}

/** A candidate's peak against row 0 in percent, signed with a real minus: "−30%", "+4%", "±0%". */
export function fmtPct(pct: number): string {
  if (!Number.isFinite(pct)) return "—";
  const r = Math.round(pct);
  return r === 0 ? "±0%" : `${r > 0 ? "+" : "−"}${Math.abs(r)}%`;
}

/** What the New run form receives when a user launches a suggestion: the full config and where it came from. */
export interface LaunchSource {
  runId: string;
  runName: string;
  index: number; // the suggestion's number in the table (1-based; row 0 is the current config)
  changes: Change[];
  group?: "same_math" | "changes_algorithm";
  predictedPeakMb?: number; // MiB above the process baseline, as the table shows it
  predictedTokensPerSec?: number;
}

/** What a run launched from a suggestion stores as its origin (POST /api/runs ``origin``). */
export function originOf(source: LaunchSource) {
  return {
    run_id: source.runId,
    index: source.index,
    group: source.group ?? null,
    predicted_peak_mb: source.predictedPeakMb ?? null,
    predicted_tokens_per_sec: source.predictedTokensPerSec ?? null,
  };
}

/** A prediction's signed error against the measurement: "+12% (predicted too high)", "−8% (too low)". */
export function fmtError(pct: number | null | undefined): string {
  if (pct === null || pct === undefined || !Number.isFinite(pct)) return "—";
  return `${fmtPct(pct)}${Math.round(pct) === 0 ? "" : pct > 0 ? " (predicted too high)" : " (predicted too low)"}`;
}
