/** Compare: the chosen runs' metrics overlaid (one colour per run, crosshair synced) and a config
 * diff. Pick runs here or from the Runs table; the selection lives in `?ids=`. Charts are titled and
 * labelled as on the run page (titles from its chart list, units from the metrics contract), with
 * the same toolbar: EMA smoothing, log scale, drag to zoom into steps, double-click to reset. */
import { useCallback, useMemo, useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { useCompare, useContract, useRuns } from "../api/queries";
import { Chart, PALETTE } from "../components/Chart";
import { Empty, ErrorState, Loading, StatusBadge } from "../components/common";
import { COMPARE_KEYS, metricTitle, SPARSE_KEYS } from "../lib/charts";
import { fmtNum } from "../lib/format";
import { alignOnSteps, ema, forLogScale } from "../lib/series";
import { configDiff } from "../lib/yaml";

export default function ComparePage() {
  const [params, setParams] = useSearchParams();
  const ids = useMemo(() => (params.get("ids") ?? "").split(",").filter(Boolean), [params]);
  const cmp = useCompare(ids, COMPARE_KEYS);
  const contract = useContract();
  const recent = useRuns({ limit: 50, sort: "-created_at" });
  const [smoothing, setSmoothing] = useState(0);
  const [showAll, setShowAll] = useState(false);
  const [logY, setLogY] = useState(false);
  const [range, setRange] = useState<{ start?: number; end?: number }>({});
  const onZoom = useCallback((start: number, end: number) => setRange({ start, end }), []);
  const onReset = useCallback(() => setRange({}), []);
  const zoomed = range.start !== undefined || range.end !== undefined;

  const setIds = (next: string[]) => setParams(next.length ? { ids: next.join(",") } : {}, { replace: true });
  const runs = cmp.data?.runs ?? [];
  const diff = useMemo(() => configDiff(runs.map((r) => r.run.config)), [runs]);
  const rows = showAll ? diff : diff.filter((d) => d.differs);

  return (
    <section aria-labelledby="cmp-h">
      <div className="page-head"><h1 id="cmp-h">Compare runs</h1></div>
      <details className="picker" open={ids.length < 2}>
        <summary>Choose runs ({ids.length} selected)</summary>
        {recent.isPending ? <Loading what="runs" /> : recent.isError ? <ErrorState error={recent.error} /> : (
          <ul className="pick-list">
            {(recent.data?.data ?? []).map((r) => (
              <li key={r.id}>
                <label>
                  <input type="checkbox" checked={ids.includes(r.id)}
                         onChange={(e) => setIds(e.target.checked ? [...ids, r.id] : ids.filter((x) => x !== r.id))} />
                  {r.name} <span className="muted mono">{r.id.slice(0, 8)}</span> <StatusBadge status={r.status} />
                </label>
              </li>
            ))}
          </ul>
        )}
      </details>
      {ids.length === 0 ? <Empty title="No runs chosen.">Tick two or more runs above, or select them on the <Link to="/">Runs</Link> page.</Empty> :
        cmp.isPending ? <Loading what="metrics" /> : cmp.isError ? <ErrorState error={cmp.error} retry={() => void cmp.refetch()} /> : (
          <>
            <ul className="legend" aria-label="Runs">
              {runs.map((r, i) => (
                <li key={r.run.id}>
                  <span className="swatch" style={{ background: PALETTE[i % PALETTE.length] }} />
                  <Link to={`/runs/${r.run.id}`}>{r.run.name}</Link> <span className="muted mono">{r.run.id.slice(0, 8)}</span>{" "}
                  <StatusBadge status={r.run.status} /> reward {fmtNum(r.run.latest["reward/mean"])}
                </li>
              ))}
            </ul>
            <div className="toolbar">
              <label>Smoothing (EMA) <input type="range" min={0} max={0.99} step={0.01} value={smoothing}
                                            onChange={(e) => setSmoothing(Number(e.target.value))} /></label>
              <output>{smoothing.toFixed(2)}</output>
              <label><input type="checkbox" checked={logY} onChange={(e) => setLogY(e.target.checked)} /> Log scale (y)</label>
              {zoomed ? (
                <button type="button" onClick={onReset}>Reset zoom (steps {range.start}–{range.end})</button>
              ) : <span className="muted">Drag on a chart to zoom into steps; double-click to reset.</span>}
            </div>
            <div className="chart-grid">
              {COMPARE_KEYS.map((key) => {
                const aligned = alignOnSteps(runs.map((r) => inRange(r.series[key] ?? { steps: [], values: [] }, range)));
                const [x, ...ys] = aligned;
                const spec = contract.data?.metrics[key];
                return (
                  <Chart key={key} title={metricTitle(key, spec?.description)} unit={spec?.unit ?? ""}
                         description={spec ? `${key}: ${spec.description}` : key}
                         data={[x, ...ys.map((y) => (logY ? forLogScale(ema(y, smoothing)) : ema(y, smoothing)))]}
                         syncKey="compare" logY={logY} onZoom={onZoom} onResetZoom={onReset}
                         series={runs.map((r, i) => ({ label: r.run.name, color: PALETTE[i % PALETTE.length]!,
                                                     points: SPARSE_KEYS.has(key) }))} />
                );
              })}
            </div>
            <section aria-labelledby="diff-h">
              <h2 id="diff-h">Config diff</h2>
              <label><input type="checkbox" checked={showAll} onChange={(e) => setShowAll(e.target.checked)} /> Show identical keys too</label>
              {rows.length === 0 ? <p className="muted">The configs are identical{runs.length < 2 ? " (choose at least two runs)" : ""}.</p> : (
                <div className="table-wrap">
                  <table className="diff">
                    <thead><tr><th scope="col">Key</th>{runs.map((r) => <th scope="col" key={r.run.id}>{r.run.name}</th>)}</tr></thead>
                    <tbody>
                      {rows.map((d) => (
                        <tr key={d.key} className={d.differs ? "differs" : ""}>
                          <th scope="row"><code>{d.key}</code></th>
                          {d.values.map((v, i) => <td key={i} className="mono">{v === undefined ? "—" : JSON.stringify(v)}</td>)}
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              )}
            </section>
          </>
        )}
    </section>
  );
}

/** A series' points within the zoomed step range (all of them when not zoomed). */
function inRange<T extends { steps: number[]; values: (number | null)[] }>(p: T, range: { start?: number; end?: number }): T {
  if (range.start === undefined && range.end === undefined) return p;
  const lo = range.start ?? -Infinity;
  const hi = range.end ?? Infinity;
  const keep = p.steps.map((s) => s >= lo && s <= hi);
  return { ...p, steps: p.steps.filter((_, i) => keep[i]), values: p.values.filter((_, i) => keep[i]) };
}
