/** Live events as the WebSocket sends them: the JSON of rlhfkit/events.py (discriminated on `type`).
 * The OpenAPI schema does not describe WebSocket payloads, so these mirror the Python models. */

interface Base {
  v?: number;
  run_id: string;
  seq: number;
  ts: number;
  step: number | null;
}

export interface RunStartedEvent extends Base {
  type: "run_started";
  name: string;
  config: Record<string, unknown>;
  seed: number | null;
  total_steps: number | null;
  device: string;
  versions: Record<string, string>;
}
export interface MetricsEvent extends Base {
  type: "metrics";
  values: Record<string, number>;
}
export interface TimingsEvent extends Base {
  type: "timings";
  stages: Record<string, number>;
  step_time: number;
  tokens: number;
}
export interface MemoryStat {
  allocated_mb?: number | null;
  reserved_mb?: number | null;
  peak_mb?: number | null;
  rss_mb?: number | null;
  rss_peak_mb?: number | null;
  gpu_util?: number | null;
  gpu_mem_used_mb?: number | null;
}
export interface MemoryEvent extends Base {
  type: "memory";
  device: string;
  stages: Record<string, MemoryStat>;
  models: Record<string, number>;
}
export interface AlertEvent extends Base {
  type: "alert";
  rule: string;
  severity: "info" | "warning" | "critical";
  metric: string | null;
  value: number | null;
  threshold: number | null;
  message: string;
  suggestion: string;
}
export interface EvalEvent extends Base {
  type: "eval";
  reward_mean: number;
  samples: { prompt: string; response: string; reward: number }[];
}
export interface ArtifactEvent extends Base {
  type: "artifact";
  name: string;
  kind: string;
  size_bytes: number;
}
export interface LogEvent extends Base {
  type: "log";
  level: string;
  message: string;
}
export interface TerminalEvent extends Base {
  type: "run_finished" | "run_failed" | "run_cancelled";
  error?: string;
}

export type RunEvent =
  | RunStartedEvent
  | MetricsEvent
  | TimingsEvent
  | MemoryEvent
  | AlertEvent
  | EvalEvent
  | ArtifactEvent
  | LogEvent
  | TerminalEvent;

export const TERMINAL_TYPES: ReadonlySet<string> = new Set(["run_finished", "run_failed", "run_cancelled"]);

/** Control messages that carry no event (`seq` absent). */
export interface ControlMessage {
  type: "heartbeat" | "lagged";
  cursor?: number | null;
  ts?: number;
}
