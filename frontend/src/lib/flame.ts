/** Flame-graph data: build a call tree from a speedscope file, collapsed stacks or stage timings,
 * lay it out in [0, 1] units, and search it. The canvas component only draws what this computes. */
import { fmtNum, fmtSeconds } from "./format";

export interface FlameNode {
  name: string;
  value: number; // total (inclusive) weight
  self: number;
  children: FlameNode[];
  parent?: FlameNode;
}

function node(name: string): FlameNode {
  return { name, value: 0, self: 0, children: [] };
}

function child(parent: FlameNode, name: string): FlameNode {
  let c = parent.children.find((x) => x.name === name);
  if (!c) {
    c = node(name);
    c.parent = parent;
    parent.children.push(c);
  }
  return c;
}

/** Add one stack (root first) with `weight`; shared prefixes merge. */
export function addStack(root: FlameNode, stack: readonly string[], weight: number): void {
  if (!(weight > 0)) return;
  let cur = root;
  cur.value += weight;
  for (const name of stack) {
    cur = child(cur, name);
    cur.value += weight;
  }
  cur.self += weight;
}

/** Brendan Gregg's collapsed format: `a;b;c 12` per line. */
export function fromCollapsed(text: string, rootName = "all"): FlameNode {
  const root = node(rootName);
  for (const line of text.split("\n")) {
    const m = /^(.*\S)\s+(\d+(?:\.\d+)?)\s*$/.exec(line);
    if (!m) continue;
    addStack(root, m[1]!.split(";"), Number(m[2]));
  }
  sortTree(root);
  return root;
}

interface SpeedscopeFrame {
  name: string;
}
interface EventedProfile {
  type: "evented";
  name?: string;
  unit?: string;
  events: { type: "O" | "C"; frame: number; at: number }[];
}
interface SampledProfile {
  type: "sampled";
  name?: string;
  unit?: string;
  samples: number[][];
  weights: number[];
}
export interface SpeedscopeFile {
  shared: { frames: SpeedscopeFrame[] };
  profiles: (EventedProfile | SampledProfile)[];
  name?: string;
}

export function isSpeedscope(x: unknown): x is SpeedscopeFile {
  const f = x as SpeedscopeFile;
  return !!f && typeof f === "object" && Array.isArray(f.shared?.frames) && Array.isArray(f.profiles);
}

/** Merge every profile of a speedscope file into one tree (identical stacks aggregate). */
/** Seconds per one of a profile's time units (speedscope's names and the short forms); none for counts. */
const SECONDS_PER: Record<string, number> = {
  nanoseconds: 1e-9, ns: 1e-9, microseconds: 1e-6, us: 1e-6, "µs": 1e-6, milliseconds: 1e-3, ms: 1e-3,
  seconds: 1, s: 1,
};

/** A frame's value as a reader wants it: times in a readable unit ("6.68 s", not "6.68e+6
 * microseconds"); other units (samples, bytes) as the number and the unit. */
export function fmtFrameValue(value: number, unit: string): string {
  const per = SECONDS_PER[unit];
  if (per === undefined) return `${fmtNum(value)}${unit && unit !== "none" ? ` ${unit}` : ""}`;
  return fmtSeconds(value * per);
}

export function fromSpeedscope(file: SpeedscopeFile): { root: FlameNode; unit: string } {
  const root = node(file.name ?? "profile");
  const frames = file.shared.frames;
  const nameOf = (i: number) => frames[i]?.name ?? `frame ${i}`;
  let unit = "none";
  const multi = file.profiles.length > 1;
  for (const p of file.profiles) {
    unit = p.unit ?? unit;
    const prefix = multi ? [p.name ?? "profile"] : [];
    if (p.type === "sampled") {
      p.samples.forEach((stack, i) => addStack(root, [...prefix, ...stack.map(nameOf)], p.weights[i] ?? 1));
    } else if (p.type === "evented") {
      const stack: { frame: number; at: number }[] = [];
      let lastAt = p.events[0]?.at ?? 0;
      for (const ev of p.events) {
        // weight the current stack for the time since the previous event
        if (stack.length && ev.at > lastAt) addStack(root, [...prefix, ...stack.map((s) => nameOf(s.frame))], ev.at - lastAt);
        lastAt = ev.at;
        if (ev.type === "O") stack.push({ frame: ev.frame, at: ev.at });
        else {
          const i = stack.map((s) => s.frame).lastIndexOf(ev.frame);
          if (i >= 0) stack.splice(i, 1);
        }
      }
    }
  }
  sortTree(root);
  return { root, unit };
}

/** A tree from per-step stage timings (seconds): stage → sub-stage (`scoring/reference`). Used when a
 * run has no profiler output: it shows where the step's wall time went, not a call stack. */
export function fromTimings(steps: readonly { stages: Record<string, number> }[], rootName = "PPO step"): FlameNode {
  const root = node(rootName);
  const subs = new Map<string, number>();
  const tops = new Map<string, number>();
  for (const s of steps) {
    for (const [k, v] of Object.entries(s.stages)) {
      if (k.includes("/")) subs.set(k, (subs.get(k) ?? 0) + v);
      else tops.set(k, (tops.get(k) ?? 0) + v);
    }
  }
  for (const [stage, total] of tops) {
    const parts = [...subs.entries()].filter(([k]) => k.startsWith(`${stage}/`));
    const inSubs = parts.reduce((a, [, v]) => a + v, 0);
    for (const [k, v] of parts) addStack(root, [stage, k], v);
    addStack(root, [stage], Math.max(0, total - inSubs));
    // a stage entirely covered by sub-stages still needs its own node
    if (total - inSubs <= 0 && parts.length === 0) addStack(root, [stage], total);
  }
  sortTree(root);
  return root;
}

function sortTree(n: FlameNode): void {
  n.children.sort((a, b) => a.name.localeCompare(b.name));
  n.children.forEach(sortTree);
}

export interface FlameRect {
  node: FlameNode;
  depth: number;
  x0: number; // [0, 1] of the focused node's width
  x1: number;
}

/** Rectangles of the subtree under `focus` (width 1), plus its ancestors drawn full-width above it.
 * Nodes narrower than `minWidth` are skipped (they would be sub-pixel). */
export function layout(focus: FlameNode, minWidth = 0): FlameRect[] {
  const out: FlameRect[] = [];
  const ancestors: FlameNode[] = [];
  for (let p = focus.parent; p; p = p.parent) ancestors.unshift(p);
  ancestors.forEach((a, depth) => out.push({ node: a, depth, x0: 0, x1: 1 }));
  const base = ancestors.length;
  const total = focus.value || 1;
  const walk = (n: FlameNode, depth: number, x0: number) => {
    const w = n.value / total;
    if (w < minWidth) return;
    out.push({ node: n, depth, x0, x1: x0 + w });
    let x = x0;
    for (const c of n.children) {
      walk(c, depth + 1, x);
      x += c.value / total;
    }
  };
  walk(focus, base, 0);
  return out;
}

export function maxDepth(rects: readonly FlameRect[]): number {
  return rects.reduce((m, r) => Math.max(m, r.depth), 0);
}

/** Nodes whose name contains `query` (case-insensitive) and their summed weight, counting nested
 * matches once. */
export function search(root: FlameNode, query: string): { matches: Set<FlameNode>; value: number } {
  const matches = new Set<FlameNode>();
  let value = 0;
  const q = query.trim().toLowerCase();
  if (!q) return { matches, value };
  const walk = (n: FlameNode, inMatch: boolean) => {
    const hit = n.name.toLowerCase().includes(q);
    if (hit) matches.add(n);
    if (hit && !inMatch) value += n.value;
    n.children.forEach((c) => walk(c, inMatch || hit));
  };
  walk(root, false);
  return { matches, value };
}

/** Pixel hit test on the laid-out rectangles. */
export function hitTest(rects: readonly FlameRect[], x: number, y: number, width: number, rowHeight: number): FlameRect | null {
  const depth = Math.floor(y / rowHeight);
  const fx = x / width;
  for (const r of rects) if (r.depth === depth && fx >= r.x0 && fx < r.x1) return r;
  return null;
}

/** A stable warm colour per frame name. */
export function colorFor(name: string): string {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  const hue = 10 + (h % 40); // reds to oranges
  const light = 50 + ((h >> 8) % 15);
  return `hsl(${hue} 80% ${light}%)`;
}
