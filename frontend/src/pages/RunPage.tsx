/** One run: header (status, config, seed, versions, elapsed/ETA, cancel/rerun) and the tabs. The
 * page owns the run's WebSocket (useRunLive); tabs read the live store and their HTTP resources. */
import { lazy, Suspense, useEffect, useState } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router-dom";
import { downloadWithAuth, type RunPublic } from "../api/client";
import { isActive, useArtifacts, useCancelRun, useOriginCheck, useRerun, useRun } from "../api/queries";
import { ErrorState, Loading, StatusBadge, Tabs } from "../components/common";
import { RunDownloads } from "../components/RunDownloads";
import { useLiveVersion, useRunLive } from "../hooks/useRunLive";
import type { LiveStore } from "../lib/liveStore";
import { algorithmLabel } from "../lib/charts";
import { fmtBytes, fmtDuration, fmtNum, parseTime } from "../lib/format";
import { sharedDeviceNote } from "../lib/sharing";
import { fmtError, fmtMiB } from "../lib/suggestions";
import { toYaml } from "../lib/yaml";
import { StabilityTab } from "./run/StabilityTab";
import type { TabProps } from "./run/tabProps";

const TimingsTab = lazy(() => import("./run/TimingsTab"));
const MemoryTab = lazy(() => import("./run/MemoryTab"));
const ProfileTab = lazy(() => import("./run/ProfileTab"));
const SuggestionsTab = lazy(() => import("./run/SuggestionsTab"));
const SamplesTab = lazy(() => import("./run/SamplesTab"));

const TABS = [
  { id: "stability", label: "Stability" },
  { id: "timings", label: "Timings" },
  { id: "memory", label: "Memory" },
  { id: "profile", label: "Profile" },
  { id: "suggestions", label: "Suggestions" },
  { id: "samples", label: "Samples" },
];

export default function RunPage() {
  const { id = "" } = useParams();
  const [params, setParams] = useSearchParams();
  const tab = TABS.some((t) => t.id === params.get("tab")) ? params.get("tab")! : "stability";
  const run = useRun(id);
  const live = useRunLive(run.data, id);

  if (run.isPending) return <Loading what="run" />;
  if (run.isError) {
    return <ErrorState error={run.error} what="run" retry={() => void run.refetch()} />;
  }
  const props: TabProps = { run: run.data, store: live.store, cursor: live.cursor };
  return (
    <article aria-labelledby="run-h">
      <RunHeader run={run.data} store={live.store} />
      <Tabs tabs={TABS} active={tab} onChange={(t) => setParams({ tab: t }, { replace: true })}>
        <Suspense fallback={<Loading what="tab" />}>
          {tab === "stability" ? <StabilityTab {...props} /> : null}
          {tab === "timings" ? <TimingsTab {...props} /> : null}
          {tab === "memory" ? <MemoryTab {...props} /> : null}
          {tab === "profile" ? <ProfileTab {...props} /> : null}
          {tab === "suggestions" ? <SuggestionsTab {...props} /> : null}
          {tab === "samples" ? <SamplesTab {...props} /> : null}
        </Suspense>
      </Tabs>
    </article>
  );
}

function useNow(active: boolean): number {
  const [now, setNow] = useState(() => Date.now() / 1000);
  useEffect(() => {
    if (!active) return;
    const t = setInterval(() => setNow(Date.now() / 1000), 1000);
    return () => clearInterval(t);
  }, [active]);
  return now;
}

/** A link to another run, by its name once fetched (its id's first 8 characters until then, or if
 * it was deleted). */
function RunName({ id }: { id: string }) {
  const other = useRun(id);
  return <Link to={`/runs/${id}`}>{other.data?.name ?? id.slice(0, 8)}</Link>;
}

function RunHeader({ run, store }: { run: RunPublic; store: LiveStore }) {
  const navigate = useNavigate();
  const cancel = useCancelRun();
  const rerun = useRerun();
  const active = isActive(run);
  const now = useNow(active);
  useLiveVersion(store, ["@timings"]);
  // steps_done counts completed training steps (docs/api.md); a live timings event at step index s means s + 1
  const liveStep = store.timings.length ? store.timings[store.timings.length - 1]!.step ?? null : null;
  const done = Math.max(run.steps_done, liveStep === null ? 0 : liveStep + 1);
  const started = parseTime(run.started_at);
  const elapsed = started === null ? null : (parseTime(run.finished_at) ?? now) - started;
  const eta = active && elapsed !== null && run.total_steps && done > 0
    ? (elapsed / done) * Math.max(0, run.total_steps - done) : null;
  const [copied, setCopied] = useState(false);
  const yaml = toYaml(run.config);
  const versions = Object.entries(run.versions);

  return (
    <header className="run-header">
      <div className="page-head">
        <h1 id="run-h">{run.name} <StatusBadge status={run.status} /></h1>
        <div className="actions">
          {active ? (
            <button type="button" disabled={run.cancel_requested || cancel.isPending} onClick={() => cancel.mutate(run.id)}>
              {run.cancel_requested ? "Cancelling after this step…" : "Cancel"}
            </button>
          ) : null}
          {run.source === "native" ? (
            <button type="button" disabled={rerun.isPending}
                    onClick={() => rerun.mutate(run.id, { onSuccess: (n) => navigate(`/runs/${n.id}`) })}>Rerun</button>
          ) : null}
          <button type="button" onClick={() => navigate("/new", { state: { config: run.config } })}>Edit &amp; launch</button>
          <Link className="button" to={`/compare?ids=${run.id}`}>Compare…</Link>
          <RunDownloads runId={run.id} />
        </div>
      </div>
      <dl className="facts">
        <div><dt>Run id</dt><dd className="mono">{run.id}</dd></div>
        <div><dt>Source</dt><dd>{run.source}</dd></div>
        <div><dt>Algorithm</dt><dd data-testid="run-algorithm">{algorithmLabel(run.config)}</dd></div>
        <div><dt>Seed</dt><dd>{run.seed ?? "—"}</dd></div>
        <div><dt>Steps done</dt><dd data-testid="run-step">{done}{run.total_steps ? ` / ${run.total_steps}` : ""}</dd></div>
        <div><dt>Elapsed</dt><dd>{fmtDuration(elapsed)}</dd></div>
        <div><dt>ETA</dt><dd>{eta === null ? "—" : fmtDuration(eta)}</dd></div>
        <div><dt>Tags</dt><dd>{run.tags.length ? run.tags.map((t) => <span key={t} className="tag">{t}</span>) : "—"}</dd></div>
        <div><dt>Git commit</dt><dd className="mono">{run.git_commit?.slice(0, 10) ?? "—"}</dd></div>
        {run.worker ? <div><dt>Worker</dt><dd>{run.worker}</dd></div> : null}
      </dl>
      {run.shared_device ? (
        <p className="callout" role="note" data-testid="shared-device">
          {sharedDeviceNote(run.shared_device, run.last_step ?? null, isActive(run))}{" "}
          Beside it: {run.shared_device.run_ids.map((other, i) => (
            <span key={other}>{i ? ", " : ""}<RunName id={other} /></span>
          ))}.
        </p>
      ) : null}
      {run.origin ? <OriginPanel run={run} origin={run.origin} /> : null}
      {run.error ? <div className="state error" role="alert"><strong>Run failed:</strong> <pre>{run.error}</pre></div> : null}
      <div className="header-details">
        <details>
          <summary>Config (YAML)</summary>
          <button type="button" onClick={() => {
            void navigator.clipboard?.writeText(yaml).then(() => setCopied(true), () => setCopied(false));
          }}>{copied ? "Copied" : "Copy YAML"}</button>
          <pre className="yaml">{yaml}</pre>
        </details>
        <RunFiles runId={run.id} />
        <details>
          <summary>Versions ({versions.length})</summary>
          {versions.length ? (
            <ul className="versions">{versions.map(([k, v]) => <li key={k}><code>{k}</code> {v}</li>)}</ul>
          ) : <p className="muted">Recorded when the run starts.</p>}
        </details>
      </div>
    </header>
  );
}

/** A run launched from a config suggestion: the suggestion it came from, and its predicted peak and
 * tokens/s against what this run measured (memory as growth above the process baseline, the
 * prediction's footing). */
function OriginPanel({ run, origin }: { run: RunPublic; origin: NonNullable<RunPublic["origin"]> }) {
  const check = useOriginCheck(run.id, true, run.status);
  const c = check.data;
  const rows: [string, string, string, string][] = [
    ["Peak memory (MiB above the process baseline)", fmtMiB(origin.predicted_peak_mb), fmtMiB(c?.measured_peak_mb),
     fmtError(c?.peak_error_pct)],
    ["Throughput (tokens/s)", fmtNum(origin.predicted_tokens_per_sec ?? null), fmtNum(c?.measured_tokens_per_sec ?? null),
     fmtError(c?.tokens_per_sec_error_pct)],
  ];
  const group = origin.group === "same_math" ? "same math" : origin.group === "changes_algorithm" ? "changes the algorithm" : null;
  return (
    <section className="origin-check" aria-labelledby="origin-h" data-testid="origin-check">
      <h2 id="origin-h">
        From suggestion {origin.index} of run <Link to={`/runs/${origin.run_id}`}>{origin.run_id}</Link>
        {group ? <span className="muted"> ({group})</span> : null}
      </h2>
      <table className="origin-table">
        <thead><tr><th scope="col"></th><th scope="col">Predicted</th><th scope="col">Measured</th><th scope="col">Error</th></tr></thead>
        <tbody>
          {rows.map(([what, p, m, e]) => (
            <tr key={what}><th scope="row">{what}</th><td>{p}</td><td>{m}</td><td>{e}</td></tr>
          ))}
        </tbody>
      </table>
      <p className="muted small">
        {check.isError ? "Could not load the measured figures." : c ? c.measured_note : "Loading the measured figures…"}
      </p>
    </section>
  );
}

/** Every file the run wrote (config, events, metrics and alerts CSV, profiles, checkpoints), each a download. */
function RunFiles({ runId }: { runId: string }) {
  const arts = useArtifacts(runId);
  const files = arts.data ?? [];
  return (
    <details className="run-files">
      <summary>Files ({arts.isPending ? "…" : files.length})</summary>
      {arts.isError ? <p className="muted">Could not list the files.</p> : files.length === 0 ? (
        <p className="muted">{arts.isPending ? "Loading…" : "No files yet."}</p>
      ) : (
        <ul>
          {files.map((a) => (
            <li key={a.name}>
              <a href={a.url} download onClick={(e) => downloadWithAuth(e, a.url, a.name.split("/").pop() ?? a.name)}>{a.name}</a>{" "}
              <span className="muted">({a.kind}, {fmtBytes(a.size_bytes)})</span>
            </li>
          ))}
        </ul>
      )}
    </details>
  );
}
