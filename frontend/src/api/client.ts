/** The typed HTTP client: openapi-fetch over the paths generated from the backend's OpenAPI schema
 * (src/client/schema.ts, written by `npm run generate`; never edited by hand). Every request carries
 * the stored API token (./auth.ts) and every 401 asks the app to show its sign-in form. */
import createClient from "openapi-fetch";
import { STATUS_OF_TERMINAL_EVENT, type TerminalEventType } from "../client/contract";
import type { components, paths } from "../client/schema";
import { auth } from "./auth";

export {
  ACTIVE_STATUSES, M, METRIC_NAMES, RUN_SOURCES, RUN_STATUSES, STATUS_OF_TERMINAL_EVENT, TERMINAL_STATUSES,
} from "../client/contract";
export type { MetricName, RunSource, RunStatus, TerminalEventType } from "../client/contract";

export type Schemas = components["schemas"];
export type RunPublic = Schemas["RunPublic"];
export type RunsPublic = Schemas["RunsPublic"];
export type Series = Schemas["Series"];
export type MetricsPublic = Schemas["MetricsPublic"];
export type ComparePublic = Schemas["ComparePublic"];
export type TimingPublic = Schemas["TimingPublic"];
export type MemoryPublic = Schemas["MemoryPublic"];
export type AlertPublic = Schemas["AlertPublic"];
export type SamplePublic = Schemas["SamplePublic"];
export type ArtifactPublic = Schemas["ArtifactPublic"];
export type MetricsContract = Schemas["MetricsContract"];
export type MetricSpec = Schemas["MetricSpecPublic"];
export type PresetPublic = Schemas["PresetPublic"];
export type RunCreate = Schemas["RunCreate"];
export type SuggestionsPublic = Schemas["SuggestionsPublic"];
export type SuggestionCandidate = Schemas["SuggestionCandidate"];
export type ProfilePublic = Schemas["ProfilePublic"];
export type ProfileStage = Schemas["ProfileStage"];
export type MemoryEstimatePublic = Schemas["MemoryEstimatePublic"];

// WebSocket messages: the JSON of rlhfkit/events.py, exported into the OpenAPI schema by backend/main.py.
export type LiveEvent = Schemas["LiveEvent"];
export type RunStartedEvent = Schemas["RunStarted"];
export type MetricsEvent = Schemas["MetricsEvent"];
export type TimingsEvent = Schemas["TimingsEvent"];
export type MemoryEvent = Schemas["MemoryEvent"];
export type AlertEvent = Schemas["AlertEvent"];
export type EvalEvent = Schemas["EvalEvent"];
export type ArtifactEvent = Schemas["ArtifactEvent"];
export type TerminalEvent = Schemas["RunFinished"] | Schemas["RunFailed"] | Schemas["RunCancelled"];
export type LiveStatusMessage = Schemas["LiveStatusMessage"];
export type HeartbeatMessage = Schemas["HeartbeatMessage"];
export type LaggedMessage = Schemas["LaggedMessage"];

/** True for the events that end a run (run_finished, run_failed, run_cancelled). */
export function isTerminalType(type: string | undefined): type is TerminalEventType {
  return type !== undefined && Object.hasOwn(STATUS_OF_TERMINAL_EVENT, type);
}

export const api = createClient<paths>({ baseUrl: "" });
api.use({
  onRequest({ request }) {
    const token = auth.token();
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
  onResponse({ response }) {
    if (response.status === 401) auth.unauthorized();
    return response;
  },
});

/** GET a URL the server handed out (an artifact's `url`) with the token, as the client does. */
export async function fetchWithAuth(url: string, init: RequestInit = {}): Promise<Response> {
  const res = await fetch(url, { ...init, headers: { ...auth.headers(), ...(init.headers as Record<string, string> | undefined) } });
  if (res.status === 401) auth.unauthorized();
  return res;
}

/** Click handler for an artifact's download link: with a token a plain link would get 401, so the
 * file is fetched with the token and saved from memory; without one the link works as it is. */
export function downloadWithAuth(e: { preventDefault(): void }, url: string, filename: string): void {
  if (!auth.token()) return;
  e.preventDefault();
  void fetchWithAuth(url).then(async (res) => {
    if (!res.ok) throw toApiError(res.status, await res.json().catch(() => undefined));
    const href = URL.createObjectURL(await res.blob());
    const a = document.createElement("a");
    a.href = href;
    a.download = filename.split("/").pop() ?? filename;
    a.click();
    setTimeout(() => URL.revokeObjectURL(href), 10_000);
  }).catch((err: unknown) => console.error(`download of ${filename} failed`, err));
}

/** One validation problem as the server reports it in a 422 (`{"detail": [{loc, msg, type}]}`). */
export interface FieldProblem {
  loc: (string | number)[];
  msg: string;
  type?: string;
}

/** An HTTP error with the server's message and, for 422s, the per-field problems. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly problems: FieldProblem[] = [],
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export function toApiError(status: number, body: unknown): ApiError {
  const detail = (body as { detail?: unknown } | undefined)?.detail;
  if (Array.isArray(detail)) {
    const problems = detail.filter(
      (d): d is FieldProblem => typeof d === "object" && d !== null && Array.isArray((d as FieldProblem).loc),
    );
    const msg = problems.map((p) => `${p.loc.join(".")}: ${p.msg}`).join("; ") || `HTTP ${status}`;
    return new ApiError(status, msg, problems);
  }
  return new ApiError(status, typeof detail === "string" ? detail : `HTTP ${status}`);
}

/** Unwrap an openapi-fetch result: the data, or an ApiError carrying the server's detail. */
export async function unwrap<T>(p: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  let res: { data?: T; error?: unknown; response: Response };
  try {
    res = await p;
  } catch (e) {
    throw new ApiError(0, `cannot reach the server (${e instanceof Error ? e.message : String(e)})`);
  }
  if (res.error !== undefined || !res.response.ok) throw toApiError(res.response.status, res.error);
  return res.data as T;
}

/** ws:// or wss:// URL of an API path on the page's own origin. */
export function wsUrl(path: string): string {
  const { protocol, host } = window.location;
  return `${protocol === "https:" ? "wss:" : "ws:"}//${host}${path}`;
}
