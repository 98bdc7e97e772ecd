/** Memory: per-stage memory over steps, weights per model, GPU utilisation when NVML reports it, and
 * the System panel (process CPU and memory, host memory, per-GPU NVML series sampled on a thread).
 * CUDA runs show max_memory_allocated during each stage; CPU runs the process RSS high-water. Below,
 * what the analytic memory model (rlhfkit.memopt) predicts for the run's config, per model and per
 * stage, beside the measured peaks less the run's process baseline: growth, what the model predicts. */
import { useMemo } from "react";
import { ApiError, type MemoryEstimatePublic, type MemoryPublic } from "../../api/client";
import { useMemory, useMemoryEstimate } from "../../api/queries";
import { Chart, PALETTE } from "../../components/Chart";
import { Empty, ErrorState, Loading } from "../../components/common";
import { useLiveVersion } from "../../hooks/useRunLive";
import { fmtMB } from "../../lib/format";
import SystemPanel from "./SystemPanel";
import type { TabProps } from "./tabProps";
import { mergeRows } from "../../lib/rows";

type Row = Pick<MemoryPublic, "step" | "device" | "stages" | "models">;
type Stat = Record<string, number | null | undefined>;

function measure(stat: Stat, cuda: boolean): number | null {
  const v = cuda ? stat.peak_mb ?? stat.allocated_mb : stat.rss_peak_mb ?? stat.rss_mb;
  return typeof v === "number" ? v : null;
}

const PART_LABELS: Record<string, string> = {
  kv_cache: "KV cache", prefill: "prefill", sampling: "sampling buffers", scores: "sampled hidden states",
  forward: "no-grad forward", rollout: "rollout tensors", autocast_weights: "autocast bf16 weights",
  activations: "saved activations", logits_head: "logits head", backward: "backward buffers",
  gradients_absent: "gradients not yet allocated",
};

const PHASES: Record<string, string> = {
  head: "LM-head backward", trunk: "trunk backward", embedding: "embedding gradient", optimizer: "optimizer step",
};

function Predicted({ est, measured }: { est: MemoryEstimatePublic; measured: Record<string, number> | null }) {
  const maxPeak = Math.max(1, ...est.stages.map((s) => s.peak_mb), ...Object.values(measured ?? {}));
  return (
    <section aria-labelledby="pred-h">
      <h2 id="pred-h">Predicted by the memory model</h2>
      <p className="callout" role="note">
        Predicted peak on {est.device}: <strong>{fmtMB(est.peak_mb)}</strong> in <strong>{est.peak_stage}</strong> —
        weights, gradients and optimizer states {fmtMB(est.persistent_mb)}, framework {fmtMB(est.overhead_mb)}, and
        the stage's transients. <code>rlhfkit mem-report</code> measures it against a short run; the Suggestions tab
        searches the configs that fit a budget.
      </p>
      <div className="two-col top">
        <table className="memory-models">
          <caption>Persistent state per model</caption>
          <thead><tr><th scope="col">Model</th><th scope="col">Weights</th><th scope="col">Gradients</th><th scope="col">Optimizer</th><th scope="col">Total</th></tr></thead>
          <tbody>
            {est.models.map((m) => (
              <tr key={m.model}>
                <th scope="row">{m.model}</th>
                <td className="num">{fmtMB(m.weights_mb)}</td><td className="num">{fmtMB(m.grads_mb)}</td>
                <td className="num">{fmtMB(m.optimizer_mb)}</td><td className="num">{fmtMB(m.total_mb)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <table className="bars memory-stages">
          <caption>Peak per stage{measured ? ", predicted and measured (growth above the process baseline)" : ""}</caption>
          <thead><tr><th scope="col">Stage</th><th scope="col">Predicted</th>{measured ? <th scope="col">Measured</th> : null}<th scope="col">Largest transients</th></tr></thead>
          <tbody>
            {est.stages.map((s) => (
              <tr key={s.stage}>
                <th scope="row">{s.stage}</th>
                <td><span className="bar" style={{ width: `${(100 * s.peak_mb) / maxPeak}%` }} />{fmtMB(s.peak_mb)}</td>
                {measured ? <td className="num">{fmtMB(measured[s.stage] ?? null)}</td> : null}
                <td className="muted">{Object.entries(s.parts_mb).filter(([, v]) => v > 0.05).slice(0, 3)
                  .map(([k, v]) => `${PART_LABELS[k] ?? k} ${fmtMB(v)}`).join(", ") || "—"}
                  {s.stage === "update" ? ` (peak in the ${PHASES[est.update_phase] ?? est.update_phase})` : null}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <p className="muted">Measured here: {est.measured_as}.</p>
    </section>
  );
}

export default function MemoryTab({ run, store, cursor }: TabProps) {
  const q = useMemory(run.id);
  const v = useLiveVersion(store, ["@memory"]);
  const rows: Row[] = useMemo(
    () => mergeRows<Row>(q.data ?? [], store.memory.map((m) => ({ ...m, step: m.step ?? 0 }))),
    [q.data, v],
  );
  const cuda = rows.some((r) => r.device.startsWith("cuda"));
  const stages = useMemo(() => [...new Set(rows.flatMap((r) => Object.keys(r.stages)))], [rows]);
  const perStage = useMemo(() => ({
    data: [rows.map((r) => r.step), ...stages.map((s) => rows.map((r) => measure((r.stages[s] ?? {}) as Stat, cuda)))] as [number[], ...(number | null)[][]],
    series: stages.map((s, i) => ({ label: s, color: PALETTE[i % PALETTE.length]! })),
  }), [rows, stages, cuda]);
  const util = useMemo(() => {
    const ys = rows.map((r) => {
      const vals = Object.values(r.stages).map((s) => (s as Stat).gpu_util).filter((x): x is number => typeof x === "number");
      return vals.length ? Math.max(...vals) : null;
    });
    return ys.some((y) => y !== null) ? ([rows.map((r) => r.step), ys] as [number[], (number | null)[]]) : null;
  }, [rows]);
  const peakByStage = useMemo(() => stages.map((s) => ({
    stage: s, peak: Math.max(0, ...rows.map((r) => measure((r.stages[s] ?? {}) as Stat, cuda) ?? 0)),
  })), [rows, stages, cuda]);
  const models = rows.length ? rows[rows.length - 1]!.models : {};
  const maxModel = Math.max(1, ...Object.values(models));
  const maxPeak = Math.max(1, ...peakByStage.map((p) => p.peak));
  // The whole process's RSS (CPU) is shared by every stage, so bars of it are all nearly full: draw
  // what each stage holds above the lowest stage instead (the MiB figure stays the measured peak).
  const base = cuda || peakByStage.length < 2 ? 0 : Math.min(...peakByStage.map((p) => p.peak));
  const barWidth = (peak: number) => (maxPeak > base ? (100 * (peak - base)) / (maxPeak - base) : 0);
  // the process's memory before the models were built: measured peaks less it are the growth the model
  // predicts (one footing with the Suggestions tab and mem-report); runs that did not record it show no column
  const rawBaseline = (run.summary ?? {})["memory_baseline_mb"];
  const baseline = typeof rawBaseline === "number" ? rawBaseline : null;
  const est = useMemoryEstimate(run.id); // on the run's device, which the server knows from the same snapshots
  const predicted = est.isPending ? <Loading what="the memory model's prediction" /> : est.data ? (
    <Predicted est={est.data} measured={est.data.device === (cuda ? "cuda" : "cpu") && baseline !== null
      ? Object.fromEntries(peakByStage.map((p) => [p.stage, Math.max(0, p.peak - baseline)])) : null} />
  ) : est.isError && !(est.error instanceof ApiError && est.error.status === 409) ? (
    <ErrorState error={est.error} retry={() => void est.refetch()} />
  ) : null;

  if (q.isPending) return <Loading what="memory" />;
  if (q.isError) return <ErrorState error={q.error} retry={() => void q.refetch()} />;
  if (rows.length === 0) return (
    <>
      <Empty title="No memory snapshots yet.">They arrive with the first finished step.</Empty>
      {predicted}
    </>
  );
  const how = cuda ? "CUDA: torch.cuda.max_memory_allocated during each stage" : "CPU: process resident set size, high-water during each stage";

  return (
    <div className="memory">
      <p className="muted">Device: <strong>{rows[rows.length - 1]!.device}</strong>. Measured as {how} (MiB).</p>
      <div className="chart-grid">
        <Chart title={cuda ? "Peak allocated per stage" : "Peak RSS per stage"} unit="MiB" data={perStage.data} series={perStage.series} syncKey={`m-${run.id}`} />
        {util ? <Chart title="GPU utilisation (NVML)" unit="%" data={util} series={[{ label: "util", color: PALETTE[2]! }]} syncKey={`m-${run.id}`} /> : null}
      </div>
      <SystemPanel runId={run.id} store={store} enabled={cursor !== null} />
      <div className="two-col">
        <section aria-labelledby="peak-h">
          <h2 id="peak-h">Peak per stage</h2>
          <table className="bars memory-peaks">
            <tbody>
              {peakByStage.map((p) => (
                <tr key={p.stage}><th scope="row">{p.stage}</th><td><span className="bar" style={{ width: `${barWidth(p.peak)}%` }} />{fmtMB(p.peak)}{base > 0 ? <span className="muted"> (+{fmtMB(p.peak - base)})</span> : null}</td></tr>
              ))}
            </tbody>
          </table>
          {base > 0 ? <p className="muted">Bars: MiB above the lowest stage ({fmtMB(base)}); the process's resident memory is shared by every stage.</p> : null}
        </section>
        <section aria-labelledby="models-h">
          <h2 id="models-h">Weights per model</h2>
          {Object.keys(models).length === 0 ? <p className="muted">Not reported for this run.</p> : (
            <table className="bars">
              <tbody>
                {Object.entries(models).map(([m, mb]) => (
                  <tr key={m}><th scope="row">{m}</th><td><span className="bar" style={{ width: `${(100 * mb) / maxModel}%` }} />{fmtMB(mb)}</td></tr>
                ))}
              </tbody>
            </table>
          )}
          <p className="muted">MiB of parameters (and buffers) per model; a shared value trunk shows as the policy.</p>
        </section>
      </div>
      {predicted}
    </div>
  );
}
