/** Runs: the registry as a table with live status, filters, search, sort, selection for compare,
 * and cancel / rerun. Filters live in the URL so a view can be shared. */
import { useEffect, useMemo, useState } from "react";
import { Link, useNavigate, useSearchParams } from "react-router-dom";
import { M, RUN_SOURCES, RUN_STATUSES, type RunPublic, type RunSource, type RunStatus } from "../api/client";
import { isActive, useCancelRun, useRerun, useRuns, type RunsQuery } from "../api/queries";
import { Empty, ErrorState, Loading, StatusBadge } from "../components/common";
import { fmtAgo, fmtDuration, fmtNum, parseTime } from "../lib/format";

type ServerSort = NonNullable<NonNullable<RunsQuery>["sort"]>;
type ClientSort = "reward" | "kl" | "duration";
type SortKey = "created_at" | "name" | "status" | ClientSort;

function duration(r: RunPublic, now: number): number | null {
  const a = parseTime(r.started_at);
  if (a === null) return null;
  return (parseTime(r.finished_at) ?? now) - a;
}

export function RunsPage() {
  const [params, setParams] = useSearchParams();
  const navigate = useNavigate();
  const status = params.get("status") ?? "";
  const source = params.get("source") ?? "";
  const sort = (params.get("sort") ?? "created_at") as SortKey;
  const desc = params.get("dir") !== "asc";
  const [text, setText] = useState(params.get("q") ?? "");
  const [selected, setSelected] = useState<Set<string>>(new Set());

  const set = (k: string, v: string) => {
    const next = new URLSearchParams(params);
    if (v) next.set(k, v);
    else next.delete(k);
    setParams(next, { replace: true });
  };
  useEffect(() => {
    const t = setTimeout(() => { if ((params.get("q") ?? "") !== text) set("q", text); }, 250);
    return () => clearTimeout(t);
  }, [text]);

  const serverSort: ServerSort = sort === "name" || sort === "status"
    ? (desc ? `-${sort}` : sort) as ServerSort
    : desc || sort !== "created_at" ? "-created_at" : "created_at";
  const query: RunsQuery = {
    status: status ? [status as RunStatus] : undefined,
    source: source ? (source as RunSource) : undefined,
    q: params.get("q") || undefined,
    sort: serverSort,
    limit: 200,
  };
  const runs = useRuns(query);
  const cancel = useCancelRun();
  const rerun = useRerun();
  const now = Date.now() / 1000;

  const rows = useMemo(() => {
    const data = runs.data?.data ?? [];
    if (sort !== "reward" && sort !== "kl" && sort !== "duration") return data;
    const val = (r: RunPublic) =>
      sort === "reward" ? r.latest[M.REWARD_MEAN] : sort === "kl" ? r.latest[M.KL_K1] : duration(r, now);
    return [...data].sort((a, b) => {
      const x = val(a) ?? -Infinity;
      const y = val(b) ?? -Infinity;
      return desc ? y - x : x - y;
    });
  }, [runs.data, sort, desc, now]);

  const header = (key: SortKey, label: string) => {
    const active = sort === key;
    return (
      <th scope="col" aria-sort={active ? (desc ? "descending" : "ascending") : "none"}>
        <button type="button" className="sort" onClick={() => {
          const next = new URLSearchParams(params);
          next.set("sort", key);
          next.set("dir", active && desc ? "asc" : "desc");
          setParams(next, { replace: true });
        }}>
          {label} {active ? (desc ? "▼" : "▲") : ""}
        </button>
      </th>
    );
  };
  const toggle = (id: string) => {
    const next = new Set(selected);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setSelected(next);
  };

  return (
    <section aria-labelledby="runs-h">
      <div className="page-head">
        <h1 id="runs-h">Runs</h1>
        <div className="actions">
          <button type="button" disabled={selected.size < 2}
                  onClick={() => navigate(`/compare?ids=${[...selected].join(",")}`)}>
            Compare selected ({selected.size})
          </button>
          <Link className="button primary" to="/new">New run</Link>
        </div>
      </div>
      <div className="filters" role="search">
        <label>Search <input type="search" value={text} placeholder="name or id" onChange={(e) => setText(e.target.value)} /></label>
        <label>Status
          <select value={status} onChange={(e) => set("status", e.target.value)}>
            <option value="">all</option>
            {RUN_STATUSES.map((s) => <option key={s}>{s}</option>)}
          </select>
        </label>
        <label>Source
          <select value={source} onChange={(e) => set("source", e.target.value)}>
            <option value="">all</option>
            {RUN_SOURCES.map((s) => <option key={s}>{s}</option>)}
          </select>
        </label>
        {runs.data ? <span className="muted">{runs.data.count} runs</span> : null}
      </div>
      {runs.isPending ? <Loading what="runs" /> : runs.isError ? <ErrorState error={runs.error} retry={() => void runs.refetch()} /> :
        rows.length === 0 ? (
          <Empty title={params.toString() ? "No runs match these filters." : "No runs yet."}>
            {params.toString() ? "Clear the search or filters." : <>Start one from <Link to="/new">New run</Link> (the smoke preset takes about a minute on a CPU), or run <code>rlhfkit submit --preset smoke</code>.</>}
          </Empty>
        ) : (
          <div className="table-wrap">
            <table className="runs">
              <thead>
                <tr>
                  <th scope="col"><span className="sr-only">Select</span></th>
                  {header("name", "Name")}
                  {header("status", "Status")}
                  <th scope="col">Source</th>
                  <th scope="col">Tags</th>
                  {header("created_at", "Created")}
                  {header("duration", "Duration")}
                  <th scope="col">Step</th>
                  {header("reward", "Reward (mean)")}
                  {header("kl", "KL [nats]")}
                  <th scope="col"><span className="sr-only">Actions</span></th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr key={r.id} data-run-id={r.id} data-status={r.status}>
                    <td><input type="checkbox" aria-label={`Select ${r.name} (${r.id}) for compare`}
                               checked={selected.has(r.id)} onChange={() => toggle(r.id)} /></td>
                    <td><Link to={`/runs/${r.id}`}>{r.name}</Link> <span className="muted mono">{r.id.slice(0, 8)}</span></td>
                    <td><StatusBadge status={r.status} /></td>
                    <td>{r.source}</td>
                    <td>{r.tags.map((t) => <span key={t} className="tag">{t}</span>)}</td>
                    <td title={r.created_at}>{fmtAgo(r.created_at, now)}</td>
                    <td>{fmtDuration(duration(r, now))}</td>
                    <td data-testid="runs-step">{r.steps_done}{r.total_steps ? ` / ${r.total_steps}` : ""}</td>
                    <td className="num">{fmtNum(r.latest[M.REWARD_MEAN])}</td>
                    <td className="num">{fmtNum(r.latest[M.KL_K1])}</td>
                    <td className="row-actions">
                      {isActive(r) ? (
                        <button type="button" disabled={r.cancel_requested || cancel.isPending}
                                onClick={() => cancel.mutate(r.id)} aria-label={`Cancel ${r.name}`}>
                          {r.cancel_requested ? "Cancelling…" : "Cancel"}
                        </button>
                      ) : null}
                      {r.source === "native" ? (
                        <button type="button" disabled={rerun.isPending} aria-label={`Rerun ${r.name}`}
                                onClick={() => rerun.mutate(r.id, { onSuccess: (n) => navigate(`/runs/${n.id}`) })}>
                          Rerun
                        </button>
                      ) : null}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      {cancel.isError ? <ErrorState error={cancel.error} /> : null}
      {rerun.isError ? <ErrorState error={rerun.error} /> : null}
    </section>
  );
}
