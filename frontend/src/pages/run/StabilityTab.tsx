/** Stability: the run's health charts, live (PPO-only ones left out of critic-free runs). Each chart subscribes only to its own keys; zooming
 * (drag) refetches the server series for that step range at full resolution. */
import { memo, useCallback, useMemo, useState } from "react";
import type { AlertEvent, AlertPublic, MetricsContract, Series } from "../../api/client";
import { useAlerts, useContract, useMetrics, type StepRange } from "../../api/queries";
import { Chart, PALETTE, type ChartSeries, type Marker } from "../../components/Chart";
import { ErrorState } from "../../components/common";
import { useLiveVersion } from "../../hooks/useRunLive";
import { countRender } from "../../lib/bench";
import { alertChartId, chartKeys, chartsFor, runTraits, type ChartDef } from "../../lib/charts";
import type { LiveStore } from "../../lib/liveStore";
import { fmtNum } from "../../lib/format";
import { alignOnSteps, ema, forLogScale, mergeLive, type Points } from "../../lib/series";
import type { TabProps } from "./tabProps";

const NO_ALERTS: AlertLike[] = [];
type AlertLike = Pick<AlertPublic, "step" | "rule" | "severity" | "metric" | "value" | "threshold" | "message" | "suggestion">;

export function StabilityTab({ run, store, cursor }: TabProps) {
  const [smoothing, setSmoothing] = useState(0);
  const [logY, setLogY] = useState(false);
  const [range, setRange] = useState<StepRange>({});
  const contract = useContract();
  const charts = useMemo(() => chartsFor(runTraits(run.config)), [run.config]);
  const keys = useMemo(() => [...new Set(charts.flatMap(chartKeys))], [charts]);
  const metrics = useMetrics(run.id, keys, range, cursor !== null);
  const alertsQ = useAlerts(run.id);
  useLiveVersion(store, ["@alerts"]);
  const alerts = useMemo(() => dedupeAlerts(alertsQ.data ?? [], store.alerts), [alertsQ.data, store.alerts.length]);
  const alertsByChart = useMemo(() => {
    const out: Record<string, AlertLike[]> = {};
    for (const a of alerts) {
      const id = a.step !== null ? alertChartId(a.metric, charts) : undefined;
      if (id !== undefined) (out[id] ??= []).push(a);
    }
    return out;
  }, [alerts, charts]);
  const zoomed = range.start !== undefined;
  const onZoom = useCallback((start: number, end: number) => setRange({ start, end }), []);
  const onReset = useCallback(() => setRange({}), []);

  return (
    <div className="stability">
      <div className="toolbar" role="group" aria-label="Chart options">
        <label>
          Smoothing (EMA) <input type="range" min={0} max={0.99} step={0.01} value={smoothing}
                                 onChange={(e) => setSmoothing(Number(e.target.value))} aria-valuetext={smoothing.toFixed(2)} />
          <output>{smoothing.toFixed(2)}</output>
        </label>
        <label><input type="checkbox" checked={logY} onChange={(e) => setLogY(e.target.checked)} /> Log scale (y)</label>
        {zoomed ? (
          <button type="button" onClick={() => setRange({})}>Reset zoom (steps {range.start}–{range.end})</button>
        ) : <span className="muted">Drag on a chart to zoom into steps; double-click to reset.</span>}
        {metrics.isFetching ? <span className="muted" role="status">updating…</span> : null}
      </div>
      {metrics.isError ? <ErrorState error={metrics.error} retry={() => void metrics.refetch()} /> : null}
      <div className="chart-grid">
        {charts.map((def) => (
          <MetricChart key={def.id} def={def} series={metrics.data?.series} store={store} smoothing={smoothing}
                       logY={logY} range={range} contract={contract.data} alerts={alertsByChart[def.id] ?? NO_ALERTS}
                       onZoom={onZoom} onReset={onReset} syncKey={`run-${run.id}`} />
        ))}
      </div>
      <section aria-labelledby="alerts-h" className="alerts">
        <h2 id="alerts-h">Alerts ({alerts.length})</h2>
        {alerts.length === 0 ? <p className="muted">No stability alerts so far.</p> : (
          <table>
            <thead><tr><th scope="col">Step</th><th scope="col">Severity</th><th scope="col">Rule</th><th scope="col">What happened</th><th scope="col">Suggested action</th></tr></thead>
            <tbody>
              {alerts.map((a, i) => (
                <tr key={`${a.step}-${a.rule}-${i}`} className={`sev-${a.severity}`}>
                  <td>{a.step ?? "—"}</td>
                  <td><span className={`badge sev-${a.severity}`}>{a.severity}</span></td>
                  <td><code>{a.rule}</code></td>
                  <td>{a.message}{a.value !== null && a.value !== undefined ? ` (${a.metric ?? "value"} = ${fmtNum(a.value)}${a.threshold !== null && a.threshold !== undefined ? `, threshold ${fmtNum(a.threshold)}` : ""})` : ""}</td>
                  <td>{a.suggestion || "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </div>
  );
}

function dedupeAlerts(server: readonly AlertPublic[], live: readonly AlertEvent[]): AlertLike[] {
  const seen = new Set<string>();
  const out: AlertLike[] = [];
  for (const a of [...server, ...live]) {
    const k = `${a.step}|${a.rule}|${a.metric}`;
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(a);
  }
  return out.sort((a, b) => (a.step ?? 0) - (b.step ?? 0));
}

interface MetricChartProps {
  def: ChartDef;
  series: Record<string, Series> | undefined;
  store: LiveStore;
  smoothing: number;
  logY: boolean;
  range: StepRange;
  contract: MetricsContract | undefined;
  alerts: AlertLike[];
  syncKey: string;
  onZoom: (start: number, end: number) => void;
  onReset: () => void;
}

function clip(p: Points, range: StepRange): Points {
  if (range.start === undefined && range.end === undefined) return p;
  const lo = range.start ?? -Infinity;
  const hi = range.end ?? Infinity;
  const idx = p.steps.map((s, i) => (s >= lo && s <= hi ? i : -1)).filter((i) => i >= 0);
  const pick = (a: number[] | null | undefined) => (a ? idx.map((i) => a[i]!) : a);
  return { steps: pick(p.steps)!, values: pick(p.values)!, min: pick(p.min), max: pick(p.max) };
}

/** One chart; re-renders when its own keys get live points, or when options change. */
const MetricChart = memo(function MetricChart(props: MetricChartProps) {
  const { def, series, store, smoothing, logY, range, contract, alerts, syncKey } = props;
  countRender(def.id);
  const keysHere = useMemo(() => chartKeys(def), [def]);
  const version = useLiveVersion(store, keysHere);
  const unit = contract?.metrics[def.lines[0]!.key]?.unit ?? "";
  const description = useMemo(() => keysHere.map((k) => contract?.metrics[k])
    .filter((m) => m !== undefined).map((m) => `${m.name} [${m.unit}]: ${m.description}`).join("\n"), [contract, keysHere]);

  const { data, chartSeries, bands, refValue } = useMemo(() => {
    const merged = (key: string) => clip(mergeLive(series?.[key], store.get(key)), range);
    const lines = def.lines.map((l) => merged(l.key));
    const parts: Points[] = [...lines];
    const cs: ChartSeries[] = [];
    let bandIdx: [number, number] | null = null;
    if (def.band) {
      parts.push(merged(def.band[0]), merged(def.band[1]));
    }
    const aligned = alignOnSteps(parts);
    const ys: (number | null)[][] = [];
    def.lines.forEach((l, i) => {
      const raw = aligned[i + 1]!;
      const color = PALETTE[i % PALETTE.length]!;
      if (smoothing > 0) {
        ys.push(logY ? forLogScale(raw) : raw);
        cs.push({ label: `${l.label ?? l.key} (raw)`, color: `${color}55`, width: 1, helper: true });
      }
      const sm = ema(raw, smoothing);
      ys.push(logY ? forLogScale(sm) : sm);
      cs.push({ label: smoothing > 0 ? `${l.label ?? l.key} (EMA)` : l.label ?? l.key, color, width: 2, points: def.points });
    });
    if (def.band) {
      const lo = aligned[def.lines.length + 1]!;
      const hi = aligned[def.lines.length + 2]!;
      ys.push(logY ? forLogScale(hi) : hi, logY ? forLogScale(lo) : lo);
      cs.push({ label: "max", color: "#4e9cff66", width: 1 }, { label: "min", color: "#4e9cff66", width: 1 });
      bandIdx = [ys.length - 1, ys.length]; // uPlot indices (x is 0): hi, lo
    }
    const ref = def.ref ? store.get(def.ref.key)?.values.at(-1) ?? series?.[def.ref.key]?.values.at(-1) : undefined;
    return {
      data: [aligned[0], ...ys] as [number[], ...(number | null)[][]],
      chartSeries: cs,
      bands: bandIdx ? [{ series: bandIdx, fill: "#4e9cff22" }] : undefined,
      refValue: ref,
    };
  }, [def, series, store, version, smoothing, logY, range]);

  const markers: Marker[] = useMemo(  // this chart's alerts (StabilityTab places each on one chart)
    () => alerts.map((a) => ({ step: a.step ?? 0, label: a.rule, severity: a.severity })), [alerts]);
  const refLine = useMemo(() => (refValue !== undefined && def.ref ? { value: refValue, label: def.ref.label } : undefined),
    [refValue, def.ref]);

  return (
    <Chart title={def.title} unit={unit} description={description} data={data} series={chartSeries} bands={bands} logY={logY} syncKey={syncKey}
           markers={markers} refLine={refLine} onZoom={props.onZoom} onResetZoom={props.onReset} />
  );
});
