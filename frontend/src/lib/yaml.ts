/** A small YAML writer for showing and copying configs (plain data only: objects, arrays, scalars). */

const PLAIN = /^[A-Za-z_][A-Za-z0-9_./ -]*$/;
const RESERVED = /^(true|false|yes|no|on|off|null|~|y|n)$/i;

function scalar(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : v > 0 ? ".inf" : v < 0 ? "-.inf" : ".nan";
  if (typeof v === "boolean") return v ? "true" : "false";
  const s = String(v);
  if (s !== "" && PLAIN.test(s) && !RESERVED.test(s) && s.trim() === s && !/^[\d.+-]/.test(s)) return s;
  return JSON.stringify(s);
}

export function toYaml(value: unknown, indent = 0): string {
  const pad = " ".repeat(indent);
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return value
      .map((v) => {
        if (v && typeof v === "object" && Object.keys(v).length) {
          return `${pad}- ${toYaml(v, indent + 2).trimStart()}`;
        }
        return `${pad}- ${toYaml(v, indent + 2)}`;
      })
      .join("\n");
  }
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0) return "{}";
    return entries
      .map(([k, v]) => {
        const key = scalar(k);
        if (v && typeof v === "object" && (Array.isArray(v) ? v.length : Object.keys(v).length)) {
          return `${pad}${key}:\n${toYaml(v, indent + 2)}`;
        }
        return `${pad}${key}: ${toYaml(v, indent + 2)}`;
      })
      .join("\n");
  }
  return scalar(value);
}

/** Flatten nested config into dotted keys (arrays stay whole), for diffs. */
export function flatten(value: unknown, prefix = ""): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      Object.assign(out, flatten(v, prefix ? `${prefix}.${k}` : k));
    }
  } else if (prefix) {
    out[prefix] = value;
  }
  return out;
}

export interface DiffRow {
  key: string;
  values: unknown[];
  differs: boolean;
}

/** One row per config key across runs, flagged when the runs disagree. */
export function configDiff(configs: readonly unknown[]): DiffRow[] {
  const flats = configs.map((c) => flatten(c));
  const keys = new Set<string>();
  flats.forEach((f) => Object.keys(f).forEach((k) => keys.add(k)));
  return [...keys].sort().map((key) => {
    const values = flats.map((f) => f[key]);
    const first = JSON.stringify(values[0]);
    return { key, values, differs: values.some((v) => JSON.stringify(v) !== first) };
  });
}
