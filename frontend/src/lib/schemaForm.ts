/** The run form, derived from the config's JSON Schema (pydantic's, with `$defs`): sections for
 * nested models, one field per leaf with its type, bounds, default and help text. Pure functions,
 * so the form's behaviour is tested without a browser. */

export interface JsonSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  default?: unknown;
  properties?: Record<string, JsonSchema>;
  $ref?: string;
  $defs?: Record<string, JsonSchema>;
  anyOf?: JsonSchema[];
  enum?: unknown[];
  const?: unknown;
  items?: JsonSchema;
  additionalProperties?: boolean | JsonSchema;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  /** cross-field rules of an object: each [a, b] means field a must divide field b (rlhfkit.config) */
  "x-divides"?: string[][];
}

export type FieldKind = "integer" | "number" | "boolean" | "enum" | "string" | "string-list" | "number-map" | "json";

export interface FieldSpec {
  path: string[];
  key: string; // dotted path, e.g. "ppo.batch_size"
  label: string;
  description: string;
  kind: FieldKind;
  nullable: boolean;
  options: (string | number)[];
  min?: number;
  max?: number;
  exclusiveMin?: number;
  exclusiveMax?: number;
  default?: unknown;
}

export interface SectionSpec {
  path: string[];
  key: string;
  label: string;
  description: string;
  fields: FieldSpec[];
  sections: SectionSpec[];
  divides: [string, string][]; // [a, b]: this section's field a must divide its field b
}

export function resolveRef(root: JsonSchema, s: JsonSchema): JsonSchema {
  let cur = s;
  for (let guard = 0; cur.$ref && guard < 32; guard++) {
    const m = /^#\/\$defs\/(.+)$/.exec(cur.$ref);
    const target = m ? root.$defs?.[m[1]!] : undefined;
    if (!target) break;
    cur = { ...target, ...withoutRef(cur) };
  }
  return cur;
}

function withoutRef(s: JsonSchema): JsonSchema {
  const { $ref: _ref, ...rest } = s;
  return rest;
}

const ACRONYMS: Record<string, string> = { ppo: "PPO", kl: "KL", eos: "EOS", lr: "LR", rss: "RSS", gpu: "GPU", rm: "RM" };

/** "kl_estimator" or pydantic's "Kl Estimator" -> "KL estimator". */
export function humanize(key: string): string {
  const words = key.replace(/_/g, " ").trim().split(/\s+/).map((w) => ACRONYMS[w.toLowerCase()] ?? w.toLowerCase());
  const s = words.join(" ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function typesOf(s: JsonSchema): string[] {
  if (Array.isArray(s.type)) return s.type;
  return s.type ? [s.type] : [];
}

/** Classify one leaf schema. `anyOf: [X, {type: null}]` is X made nullable. */
export function fieldFor(root: JsonSchema, path: string[], raw: JsonSchema): FieldSpec {
  let s = resolveRef(root, raw);
  let nullable = false;
  if (s.anyOf) {
    const branches = s.anyOf.map((b) => resolveRef(root, b));
    const nonNull = branches.filter((b) => !typesOf(b).includes("null"));
    nullable = nonNull.length < branches.length;
    if (nonNull.length === 1) s = { ...nonNull[0]!, ...withoutAnyOf(s) };
  }
  const types = typesOf(s).filter((t) => t !== "null");
  if (typesOf(s).includes("null")) nullable = true;
  let kind: FieldKind = "json";
  let options: (string | number)[] = [];
  if (s.enum) {
    kind = "enum";
    options = s.enum.filter((v): v is string | number => typeof v === "string" || typeof v === "number");
  } else if (s.const !== undefined) {
    kind = "enum";
    options = typeof s.const === "string" || typeof s.const === "number" ? [s.const] : [];
  } else if (types[0] === "integer") kind = "integer";
  else if (types[0] === "number") kind = "number";
  else if (types[0] === "boolean") kind = "boolean";
  else if (types[0] === "string") kind = "string";
  else if (types[0] === "array" && s.items && typesOf(resolveRef(root, s.items)).includes("string")) kind = "string-list";
  else if (types[0] === "object" && typeof s.additionalProperties === "object" &&
           ["number", "integer"].includes(typesOf(s.additionalProperties)[0] ?? "")) kind = "number-map";
  const key = path.join(".");
  return {
    path,
    key,
    label: humanize(raw.title ?? s.title ?? path[path.length - 1] ?? key),
    description: raw.description ?? s.description ?? "",
    kind,
    nullable,
    options,
    min: s.minimum,
    max: s.maximum,
    exclusiveMin: s.exclusiveMinimum,
    exclusiveMax: s.exclusiveMaximum,
    default: raw.default ?? s.default,
  };
}

function withoutAnyOf(s: JsonSchema): JsonSchema {
  const { anyOf: _a, ...rest } = s;
  return rest;
}

/** The form tree: nested object models become sections, everything else a field. */
export function buildForm(root: JsonSchema, s: JsonSchema = root, path: string[] = []): SectionSpec {
  const node = resolveRef(root, s);
  const out: SectionSpec = {
    path,
    key: path.join("."),
    label: path.length ? humanize(path[path.length - 1]!) : node.title ?? "Config",
    description: node.description ?? "",
    fields: [],
    sections: [],
    divides: (node["x-divides"] ?? []).flatMap(([a, b]): [string, string][] => (a && b ? [[a, b]] : [])),
  };
  for (const [name, child] of Object.entries(node.properties ?? {})) {
    const resolved = resolveRef(root, child);
    if (resolved.properties && typesOf(resolved).includes("object")) {
      out.sections.push(buildForm(root, child, [...path, name]));
    } else {
      out.fields.push(fieldFor(root, [...path, name], child));
    }
  }
  return out;
}

export function allFields(section: SectionSpec): FieldSpec[] {
  return [...section.fields, ...section.sections.flatMap(allFields)];
}

export function getAt(obj: unknown, path: readonly string[]): unknown {
  let cur: unknown = obj;
  for (const p of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

/** A copy of `obj` with `value` at `path` (objects along the way are copied, never mutated). */
export function setAt<T extends Record<string, unknown>>(obj: T, path: readonly string[], value: unknown): T {
  if (path.length === 0) return obj;
  const [head, ...rest] = path as [string, ...string[]];
  const child = obj[head];
  const next = rest.length === 0
    ? value
    : setAt((child && typeof child === "object" && !Array.isArray(child) ? child : {}) as Record<string, unknown>, rest, value);
  return { ...obj, [head]: next };
}

/** What the user typed, as the value to send. Text that is not a valid number is sent as typed, so
 * the server's 422 (the single source of truth for validation) names the problem. */
export function parseInput(f: FieldSpec, text: string): unknown {
  const t = text.trim();
  if (t === "" && f.nullable) return null;
  switch (f.kind) {
    case "integer":
      return /^[-+]?\d+$/.test(t) ? Number(t) : text;
    case "number": {
      const n = Number(t);
      return t !== "" && Number.isFinite(n) ? n : text;
    }
    case "string-list":
      return t === "" ? [] : t.split(",").map((x) => x.trim()).filter(Boolean);
    case "number-map":
    case "json":
      if (t === "") return f.kind === "number-map" ? {} : null;
      try {
        return JSON.parse(t);
      } catch {
        return text;
      }
    case "enum": {
      const hit = f.options.find((o) => String(o) === text);
      return hit ?? text;
    }
    default:
      return text;
  }
}

/** A value as the text shown in its input. */
export function formatValue(f: FieldSpec, v: unknown): string {
  if (v === null || v === undefined) return "";
  if (f.kind === "string-list" && Array.isArray(v)) return v.join(", ");
  if (f.kind === "number-map" || f.kind === "json") return typeof v === "string" ? v : JSON.stringify(v);
  return String(v);
}

/** Bounds as help text: "≥ 1, ≤ 65536". */
export function describeBounds(f: FieldSpec): string {
  const parts: string[] = [];
  if (f.min !== undefined) parts.push(`≥ ${f.min}`);
  if (f.exclusiveMin !== undefined) parts.push(`> ${f.exclusiveMin}`);
  if (f.max !== undefined) parts.push(`≤ ${f.max}`);
  if (f.exclusiveMax !== undefined) parts.push(`< ${f.exclusiveMax}`);
  return parts.join(", ");
}

export interface Problem {
  loc: readonly (string | number)[];
  msg: string;
}

/** A 422's problems by dotted field key. `loc` looks like `["body","config","ppo","batch_size"]` or
 * `["body","overrides","ppo.batch_size"]`; anything that names no config field goes under "". */
export function errorsByField(problems: readonly Problem[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const p of problems) {
    let loc = p.loc.map(String);
    if (loc[0] === "body") loc = loc.slice(1);
    let key = "";
    if (loc[0] === "config") key = loc.slice(1).join(".");
    else if (loc[0] === "overrides") key = loc.slice(1).join(".");
    else if (loc[0] === "name" || loc[0] === "tags") key = loc[0];
    (out[key] ??= []).push(p.msg);
  }
  return out;
}

/** Leaves of `values` that differ from `base`, as dotted-key overrides. */
export function diffOverrides(base: unknown, values: unknown, prefix: string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const isObj = (x: unknown): x is Record<string, unknown> => !!x && typeof x === "object" && !Array.isArray(x);
  if (isObj(values) && isObj(base) && Object.keys(values).length > 0) {
    for (const k of Object.keys(values)) Object.assign(out, diffOverrides(base[k], values[k], [...prefix, k]));
    return out;
  }
  if (JSON.stringify(base) !== JSON.stringify(values)) out[prefix.join(".")] = values;
  return out;
}

/** Problems with one field's value, from its JSON Schema (type, enum, bounds), worded as the
 * server words them; empty when the value is acceptable. */
export function checkField(f: FieldSpec, v: unknown): string[] {
  if (v === null || v === undefined) return v === null && !f.nullable && f.kind !== "json" ? ["Input should not be empty"] : [];
  if (f.kind === "integer" && !(typeof v === "number" && Number.isInteger(v))) return ["Input should be a valid integer"];
  if (f.kind === "number" && !(typeof v === "number" && Number.isFinite(v))) return ["Input should be a valid number"];
  if (f.kind === "enum" && !f.options.includes(v as string | number)) {
    return [`Input should be ${f.options.map((o) => `'${o}'`).join(", ")}`];
  }
  if (f.kind === "number-map" && (typeof v !== "object" || Array.isArray(v) ||
      Object.values(v as object).some((x) => typeof x !== "number"))) {
    return ["Input should be a JSON object of numbers"];
  }
  if (typeof v !== "number") return [];
  const out: string[] = [];
  if (f.min !== undefined && v < f.min) out.push(`Input should be greater than or equal to ${f.min}`);
  if (f.exclusiveMin !== undefined && v <= f.exclusiveMin) out.push(`Input should be greater than ${f.exclusiveMin}`);
  if (f.max !== undefined && v > f.max) out.push(`Input should be less than or equal to ${f.max}`);
  if (f.exclusiveMax !== undefined && v >= f.exclusiveMax) out.push(`Input should be less than ${f.exclusiveMax}`);
  return out;
}

/** Every problem the browser can find before submit, by dotted field key: each field against its
 * schema, then each section's "x-divides" rules (only between values that are themselves valid). */
export function validateForm(form: SectionSpec, value: unknown): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  const walk = (s: SectionSpec) => {
    for (const f of s.fields) {
      const problems = checkField(f, getAt(value, f.path));
      if (problems.length) out[f.key] = problems;
    }
    for (const [a, b] of s.divides) {
      const ka = [...s.path, a].join(".");
      const kb = [...s.path, b].join(".");
      const va = getAt(value, [...s.path, a]);
      const vb = getAt(value, [...s.path, b]);
      if (out[ka] || out[kb] || typeof va !== "number" || typeof vb !== "number" || va <= 0) continue;
      if (vb % va !== 0) (out[ka] ??= []).push(`${ka} (${va}) must divide ${kb} (${vb})`);
    }
    s.sections.forEach(walk);
  };
  walk(form);
  return out;
}
