/** Timings: where each PPO step's wall time goes, per stage (stacked per step and as totals), the
 * slowest stage and the most idle stage (wall time below the device's peak, from MFU) called out,
 * MFU and time per token per stage, and throughput. Seconds are wall time with the device synchronised at
 * stage boundaries (see rlhfkit/instrument.py). */
import { useMemo } from "react";
import type { TimingPublic } from "../../api/client";
import { useContract, useMetrics, useRunStarted, useTimings } from "../../api/queries";
import { Chart, PALETTE, type ChartSeries } from "../../components/Chart";
import { Empty, ErrorState, Loading } from "../../components/common";
import { useLiveVersion } from "../../hooks/useRunLive";
import { fmtDuration, fmtNum } from "../../lib/format";
import { ALL_PERF_KEYS, mostIdle, stageEfficiency } from "../../lib/mfu";
import { mergeRows } from "../../lib/rows";
import { mergeLive } from "../../lib/series";
import type { TabProps } from "./tabProps";

type Row = Pick<TimingPublic, "step" | "stages" | "step_time" | "tokens">;

const fmtPct = (x: number | null | undefined) => (x === null || x === undefined ? "—" : `${fmtNum(100 * x, 3)} %`);

export default function TimingsTab({ run, store, cursor }: TabProps) {
  const q = useTimings(run.id);
  const contract = useContract();
  const perfQ = useMetrics(run.id, ALL_PERF_KEYS, {}, cursor !== null);
  const started = useRunStarted(run.id);
  const v = useLiveVersion(store, ["@timings", ...ALL_PERF_KEYS]);
  const rows: Row[] = useMemo(
    () => mergeRows<Row>(q.data ?? [], store.timings.map((t) => ({ ...t, step: t.step ?? 0 }))),
    [q.data, v],
  );
  const stages = useMemo(() => {
    const seen = new Set<string>();
    rows.forEach((r) => Object.keys(r.stages).forEach((k) => { if (!k.includes("/")) seen.add(k); }));
    // pipeline order from the contract (generation, scoring, ...); unknown stages last
    const order = contract.data?.stages ?? [];
    const rank = (s: string) => (order.includes(s) ? order.indexOf(s) : order.length);
    return [...seen].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  }, [rows, contract.data]);

  const stacked = useMemo(() => {
    const steps = rows.map((r) => r.step);
    const cum: number[][] = [];
    let acc = rows.map(() => 0);
    for (const s of stages) {
      acc = acc.map((a, i) => a + (rows[i]!.stages[s] ?? 0));
      cum.push(acc);
    }
    // draw the tallest first so each band shows its own stage on top of the ones below
    const order = stages.map((_, i) => i).reverse();
    const series: ChartSeries[] = order.map((i) => ({
      label: stages[i]!, color: PALETTE[i % PALETTE.length]!, fill: `${PALETTE[i % PALETTE.length]}cc`, width: 1,
    }));
    return { data: [steps, ...order.map((i) => cum[i]!)] as [number[], ...number[][]], series };
  }, [rows, stages]);

  const totals = useMemo(() => {
    const t = stages.map((s) => ({ stage: s, total: rows.reduce((a, r) => a + (r.stages[s] ?? 0), 0) }));
    const all = rows.reduce((a, r) => a + r.step_time, 0);
    return { rows: t.sort((a, b) => b.total - a.total), all };
  }, [rows, stages]);

  const throughput = useMemo(() => ({
    data: [rows.map((r) => r.step), rows.map((r) => (r.step_time > 0 ? r.tokens / r.step_time : null))] as [number[], (number | null)[]],
    stepTime: [rows.map((r) => r.step), rows.map((r) => r.step_time)] as [number[], number[]],
  }), [rows]);

  const efficiency = useMemo(() => {
    const series = Object.fromEntries(ALL_PERF_KEYS.map((k) => [k, mergeLive(perfQ.data?.series[k], store.get(k))]));
    const byStage = new Map(stageEfficiency(rows, series).map((e) => [e.stage, e]));
    return { byStage, idle: mostIdle([...byStage.values()]) };
  }, [rows, perfQ.data, v]);
  const peak = (started.data as { perf?: { source?: string } } | null | undefined)?.perf?.source;

  if (q.isPending) return <Loading what="timings" />;
  if (q.isError) return <ErrorState error={q.error} retry={() => void q.refetch()} />;
  if (rows.length === 0) return <Empty title="No timings yet.">They arrive with the first finished step.</Empty>;
  const slow = totals.rows[0];
  const sumStages = totals.rows.reduce((a, r) => a + r.total, 0) || 1;

  return (
    <div className="timings">
      {slow ? (
        <p className="callout" role="note">
          Slowest stage: <strong>{slow.stage}</strong> — {fmtNum((100 * slow.total) / sumStages, 3)} % of stage time,
          mean {fmtDuration(slow.total / rows.length)} per step over {rows.length} steps.
        </p>
      ) : null}
      {efficiency.idle && efficiency.idle.idle !== null ? (
        <p className="callout" role="note" data-testid="most-idle">
          Most idle stage: <strong>{efficiency.idle.stage}</strong> — {fmtDuration(efficiency.idle.idle)} of{" "}
          {fmtDuration(efficiency.idle.seconds)} below the device's peak (MFU{" "}
          {fmtNum(100 * (efficiency.idle.mfu ?? 0), 3)} %).
        </p>
      ) : null}
      <div className="chart-grid">
        <Chart title="Stage time per step (stacked)" unit="s" data={stacked.data} series={stacked.series} syncKey={`t-${run.id}`} />
        <Chart title="Throughput (response tokens / step wall time)" unit="tokens/s" data={throughput.data}
               series={[{ label: "tokens/s", color: PALETTE[2]! }]} syncKey={`t-${run.id}`} />
        <Chart title="Step time" unit="s" data={throughput.stepTime} series={[{ label: "step time", color: PALETTE[0]! }]} syncKey={`t-${run.id}`} />
      </div>
      <section aria-labelledby="totals-h">
        <h2 id="totals-h">Totals per stage</h2>
        <table className="bars">
          <thead><tr><th scope="col">Stage</th><th scope="col">Total [s]</th><th scope="col">Mean per step [s]</th><th scope="col">MFU</th><th scope="col">Time per token [ms]</th><th scope="col">Share</th></tr></thead>
          <tbody>
            {totals.rows.map((r) => (
              <tr key={r.stage}>
                <th scope="row">{r.stage}</th>
                <td className="num">{fmtNum(r.total, 4)}</td>
                <td className="num">{fmtNum(r.total / rows.length, 3)}</td>
                <td className="num" data-testid={`mfu-${r.stage}`}>{fmtPct(efficiency.byStage.get(r.stage)?.mfu)}</td>
                <td className="num">{fmtNum(efficiency.byStage.get(r.stage)?.msPerToken ?? NaN, 3)}</td>
                <td><span className="bar" style={{ width: `${(100 * r.total) / sumStages}%` }} />{fmtNum((100 * r.total) / sumStages, 3)} %</td>
              </tr>
            ))}
          </tbody>
        </table>
        <p className="muted">Whole steps: {fmtDuration(totals.all)} in total; stage times are wall seconds, device synchronised at stage boundaries.
          MFU = the stage's model FLOPs (counted from the model shape and the real tokens) / (its seconds × peak), weighted
          by seconds over the steps; time per token: per generated token for generation, per batch token otherwise.
          {peak ? <> Peak: {peak}.</> : null}</p>
      </section>
    </div>
  );
}
