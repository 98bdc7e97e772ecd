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
