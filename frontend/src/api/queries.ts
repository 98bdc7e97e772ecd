/** TanStack Query hooks, one per API resource. Keys start with ["run", id] for everything about a
 * run, so one invalidation refreshes a run page. */
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import type { JsonSchema } from "../lib/schemaForm";
import type { operations } from "../client/schema";
import { ACTIVE_STATUSES, ApiError, api, type RunCreate, type RunPublic, unwrap } from "./client";

export type RunsQuery = NonNullable<operations["list_runs_api_runs_get"]["parameters"]["query"]>;

export const keys = {
  runs: (q: RunsQuery) => ["runs", q] as const,
  run: (id: string) => ["run", id] as const,
};

/** Retry network and 5xx errors twice; a 4xx (no such thing, not applicable) will not change. */
const retryUnless4xx = (n: number, err: Error) => !(err instanceof ApiError && err.status >= 400 && err.status < 500) && n < 2;

export const isActive = (r: Pick<RunPublic, "status"> | undefined) => !!r && ACTIVE_STATUSES.includes(r.status);

export function useRuns(query: RunsQuery) {
  return useQuery({
    queryKey: keys.runs(query),
    queryFn: ({ signal }) => unwrap(api.GET("/api/runs", { params: { query }, signal })),
    placeholderData: keepPreviousData,
    // status changes arrive over WS /api/live; latest reward/KL of active runs are polled
    refetchInterval: (q) => (q.state.data?.data.some(isActive) ? 5000 : false),
  });
}

export function useRun(id: string) {
  return useQuery({
    queryKey: keys.run(id),
    queryFn: ({ signal }) => unwrap(api.GET("/api/runs/{run_id}", { params: { path: { run_id: id } }, signal })),
    retry: retryUnless4xx, // a run that is not there will not appear on a retry
  });
}

export function useContract() {
  return useQuery({
    queryKey: ["contract"],
    queryFn: ({ signal }) => unwrap(api.GET("/api/metrics/contract", { signal })),
    staleTime: Infinity,
  });
}

export interface StepRange {
  start?: number;
  end?: number;
}

export function useMetrics(id: string, metricKeys: readonly string[], range: StepRange, enabled: boolean, maxPoints = 1000) {
  return useQuery({
    queryKey: [...keys.run(id), "metrics", metricKeys.join(","), maxPoints, range.start ?? null, range.end ?? null],
    queryFn: ({ signal }) =>
      unwrap(api.GET("/api/runs/{run_id}/metrics", {
        params: {
          path: { run_id: id },
          query: { keys: [metricKeys.join(",")], max_points: maxPoints, start: range.start, end: range.end },
        },
        signal,
      })),
    enabled,
    placeholderData: keepPreviousData,
  });
}

/** The run's ``run_started`` event: device, versions and the peak FLOP/s its MFU divides by. */
export function useRunStarted(id: string) {
  return useQuery({
    queryKey: [...keys.run(id), "run_started"],
    queryFn: ({ signal }) =>
      unwrap(api.GET("/api/runs/{run_id}/events", {
        params: { path: { run_id: id }, query: { types: ["run_started"], limit: 1 } },
        signal,
      })).then((page) => page.events[0] ?? null),
    staleTime: Infinity,
  });
}

export function useTimings(id: string) {
  return useQuery({
    queryKey: [...keys.run(id), "timings"],
    queryFn: ({ signal }) => unwrap(api.GET("/api/runs/{run_id}/timings", { params: { path: { run_id: id } }, signal })),
  });
}

export function useMemory(id: string) {
  return useQuery({
    queryKey: [...keys.run(id), "memory"],
    queryFn: ({ signal }) => unwrap(api.GET("/api/runs/{run_id}/memory", { params: { path: { run_id: id } }, signal })),
  });
}

export function useAlerts(id: string) {
  return useQuery({
    queryKey: [...keys.run(id), "alerts"],
    queryFn: ({ signal }) => unwrap(api.GET("/api/runs/{run_id}/alerts", { params: { path: { run_id: id } }, signal })),
  });
}

export function useSamples(id: string) {
  return useQuery({
    queryKey: [...keys.run(id), "samples"],
    queryFn: ({ signal }) => unwrap(api.GET("/api/runs/{run_id}/samples", { params: { path: { run_id: id } }, signal })),
  });
}

export function useArtifacts(id: string) {
  return useQuery({
    queryKey: [...keys.run(id), "artifacts"],
    queryFn: ({ signal }) => unwrap(api.GET("/api/runs/{run_id}/artifacts", { params: { path: { run_id: id } }, signal })),
  });
}

/** The profiler's summary (written when a profiled run ends); `artifact` names the file it is read from. */
export function useProfile(id: string, artifact: string | undefined) {
  return useQuery({
    queryKey: [...keys.run(id), "profile", artifact ?? ""],
    queryFn: ({ signal }) => unwrap(api.GET("/api/runs/{run_id}/profile", { params: { path: { run_id: id } }, signal })),
    enabled: !!artifact,
    staleTime: Infinity,
    retry: retryUnless4xx,
  });
}

/** The analytic memory model for the run's config on the run's device (a function of the config). */
export function useMemoryEstimate(id: string) {
  return useQuery({
    queryKey: [...keys.run(id), "memory-estimate"],
    queryFn: ({ signal }) =>
      unwrap(api.GET("/api/runs/{run_id}/memory/estimate", { params: { path: { run_id: id } }, signal })),
    staleTime: Infinity,
    retry: retryUnless4xx,
  });
}

export type SuggestionsQuery = NonNullable<operations["get_suggestions_api_runs__run_id__suggestions_get"]["parameters"]["query"]>;

/** Config suggestions computed on demand by the server (1–4 s of CPU); a new budget keeps the old
 * table on screen until the new one arrives. */
export function useSuggestions(id: string, query: SuggestionsQuery) {
  return useQuery({
    queryKey: [...keys.run(id), "suggestions", query.budget_gb ?? null, query.device ?? null, query.top ?? null],
    queryFn: ({ signal }) =>
      unwrap(api.GET("/api/runs/{run_id}/suggestions", { params: { path: { run_id: id }, query }, signal })),
    placeholderData: keepPreviousData,
    staleTime: Infinity, // a function of the config and the budget: it does not change while the run runs
    retry: retryUnless4xx,
  });
}

/** Predicted vs measured for a run launched from a config suggestion; only asked for when the run has an origin.
 * Refetched with the run's status, since the measured figures arrive as it finishes. */
export function useOriginCheck(id: string, enabled: boolean, status: string) {
  return useQuery({
    queryKey: [...keys.run(id), "origin", status],
    queryFn: ({ signal }) => unwrap(api.GET("/api/runs/{run_id}/origin", { params: { path: { run_id: id } }, signal })),
    enabled,
    retry: retryUnless4xx,
  });
}

export function useCompare(ids: readonly string[], metricKeys: readonly string[]) {
  return useQuery({
    queryKey: ["compare", ids.join(","), metricKeys.join(",")],
    queryFn: ({ signal }) =>
      unwrap(api.GET("/api/runs/compare", {
        params: { query: { ids: [ids.join(",")], keys: [metricKeys.join(",")], max_points: 1000 } },
        signal,
      })),
    enabled: ids.length > 0,
  });
}

export function useConfigSchema() {
  return useQuery({
    queryKey: ["config-schema"],
    queryFn: async ({ signal }) => (await unwrap(api.GET("/api/config/schema", { signal }))) as JsonSchema,
    staleTime: Infinity,
  });
}

export function usePresets() {
  return useQuery({
    queryKey: ["presets"],
    queryFn: ({ signal }) => unwrap(api.GET("/api/config/presets", { signal })),
    staleTime: 60_000,
  });
}

/** Put a fresh RunPublic into every cache that shows it. */
export function useRememberRun() {
  const qc = useQueryClient();
  return (run: RunPublic) => {
    qc.setQueryData(keys.run(run.id), run);
    void qc.invalidateQueries({ queryKey: ["runs"] });
  };
}

export function useCreateRun() {
  const remember = useRememberRun();
  return useMutation({
    mutationFn: (body: RunCreate) => unwrap(api.POST("/api/runs", { body })),
    onSuccess: remember,
  });
}

export function useCancelRun() {
  const remember = useRememberRun();
  return useMutation({
    mutationFn: (id: string) => unwrap(api.POST("/api/runs/{run_id}/cancel", { params: { path: { run_id: id } } })),
    onSuccess: remember,
  });
}

export function useRerun() {
  const remember = useRememberRun();
  return useMutation({
    mutationFn: (id: string) =>
      unwrap(api.POST("/api/runs/{run_id}/rerun", { params: { path: { run_id: id } }, body: { overrides: {} } })),
    onSuccess: remember,
  });
}
