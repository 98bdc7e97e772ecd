/** Live points of one run, outside React state. Each chart subscribes to the keys it draws, so an
 * event re-renders only the charts whose keys it carries (10 updates/s leave the rest alone). */
import {
  STATUS_OF_TERMINAL_EVENT, type AlertEvent, type EvalEvent, type LiveEvent, type MemoryEvent, type RunStatus,
  type TimingsEvent,
} from "../api/client";
import type { Points } from "./series";

type Listener = () => void;

export class LiveStore {
  private points = new Map<string, Points>();
  private versions = new Map<string, number>();
  private listeners = new Map<string, Set<Listener>>();
  readonly timings: TimingsEvent[] = [];
  readonly memory: MemoryEvent[] = [];
  readonly alerts: AlertEvent[] = [];
  readonly evals: EvalEvent[] = [];
  lastSeq = -1;
  status: RunStatus | null = null;

  /** Apply one event (already deduplicated by the socket hook). */
  apply(ev: LiveEvent): void {
    this.lastSeq = Math.max(this.lastSeq, ev.seq);
    switch (ev.type) {
      case "metrics": {
        const step = ev.step ?? 0;
        for (const [key, value] of Object.entries(ev.values)) {
          let p = this.points.get(key);
          if (!p) this.points.set(key, (p = { steps: [], values: [] }));
          p.steps.push(step);
          p.values.push(value);
          this.bump(key);
        }
        break;
      }
      case "timings":
        this.timings.push(ev);
        this.bump("@timings");
        break;
      case "memory":
        this.memory.push(ev);
        this.bump("@memory");
        break;
      case "alert":
        this.alerts.push(ev);
        this.bump("@alerts");
        break;
      case "eval":
        this.evals.push(ev);
        this.bump("@evals");
        break;
      case "run_started":
        this.status = "running";
        this.bump("@status");
        break;
      case "run_finished":
      case "run_failed":
      case "run_cancelled":
        this.status = STATUS_OF_TERMINAL_EVENT[ev.type];
        this.bump("@status");
        break;
      default:
        break;
    }
  }

  get(key: string): Points | undefined {
    return this.points.get(key);
  }

  /** A number that changes whenever any of `keys` gets a point (useSyncExternalStore snapshot). */
  version(keys: readonly string[]): number {
    let v = 0;
    for (const k of keys) v += this.versions.get(k) ?? 0;
    return v;
  }

  subscribe(keys: readonly string[], fn: Listener): () => void {
    for (const k of keys) {
      let set = this.listeners.get(k);
      if (!set) this.listeners.set(k, (set = new Set()));
      set.add(fn);
    }
    return () => {
      for (const k of keys) this.listeners.get(k)?.delete(fn);
    };
  }

  private bump(key: string): void {
    this.versions.set(key, (this.versions.get(key) ?? 0) + 1);
    this.listeners.get(key)?.forEach((fn) => fn());
  }
}
