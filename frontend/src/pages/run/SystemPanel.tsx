/** System: the training process's CPU and memory, the host's memory and, per visible GPU, NVML's
 * utilisation, memory, power and temperature — the system/* series a sampler thread records every
 * monitor.system_interval_s seconds (rlhfkit/system.py). GPU charts appear only when a GPU reported:
 * no GPU means no series, never a line of zeros. */
import { useMemo } from "react";
import { M } from "../../api/client";
import { useMetrics } from "../../api/queries";
import { Chart, PALETTE } from "../../components/Chart";
import { useLiveVersion } from "../../hooks/useRunLive";
import type { LiveStore } from "../../lib/liveStore";
import { mergeLive, type Points } from "../../lib/series";

const MAX_GPUS = 8;
/** rlhfkit.metrics.GPU_FIELDS: what NVML reports per GPU, as system/gpu<i>/<field>. */
const GPU_FIELDS = ["util_percent", "mem_used_mb", "mem_total_mb", "power_w", "temp_c"] as const;
const gpuKey = (i: number, field: string) => `system/gpu${i}/${field}`;
const HOST_KEYS = [M.SYS_CPU_PERCENT, M.SYS_RSS_MB, M.SYS_HOST_MEM_USED_MB, M.SYS_HOST_MEM_PERCENT] as const;
const GPU_KEYS = Array.from({ length: MAX_GPUS }, (_, i) => GPU_FIELDS.map((f) => gpuKey(i, f))).flat();
const ALL_KEYS: readonly string[] = [...HOST_KEYS, ...GPU_KEYS];

function aligned(series: Points[]): [number[], ...(number | null)[][]] {
  const steps = series[0]?.steps ?? [];
  return [steps, ...series.map((s) => steps.map((_, i) => s.values[i] ?? null))];
}

export default function SystemPanel({ runId, store, enabled }: { runId: string; store: LiveStore; enabled: boolean }) {
  const q = useMetrics(runId, ALL_KEYS, {}, enabled);
  const v = useLiveVersion(store, ALL_KEYS);
  const pts = useMemo(() => {
    const out: Record<string, Points> = {};
    for (const k of ALL_KEYS) {
      const p = mergeLive(q.data?.series[k], store.get(k));
      if (p.steps.length) out[k] = p;
    }
    return out;
  }, [q.data, v]);
  const gpus = Array.from({ length: MAX_GPUS }, (_, i) => i).filter((i) => pts[gpuKey(i, "util_percent")] ?? pts[gpuKey(i, "mem_used_mb")]);
  const cpu = pts[M.SYS_CPU_PERCENT];
  if (!cpu) return null;
  const gpuChart = (field: string, title: string, unit: string) => {
    const present = gpus.filter((i) => pts[gpuKey(i, field)]);
    if (!present.length) return null;
    return <Chart title={title} unit={unit} data={aligned(present.map((i) => pts[gpuKey(i, field)]!))}
                  series={present.map((i, n) => ({ label: `GPU ${i}`, color: PALETTE[n % PALETTE.length]! }))} syncKey={`s-${runId}`} />;
  };
  return (
    <section aria-labelledby="system-h" className="system">
      <h2 id="system-h">System</h2>
      <p className="muted">Sampled on a thread of the training process every <code>monitor.system_interval_s</code> seconds
        (psutil; NVML per visible GPU), plotted at the step in progress when sampled.
        {gpus.length ? null : " No GPU reported: no GPU series."}</p>
      <div className="chart-grid">
        <Chart title="Process CPU" unit="% of one core" data={aligned([cpu])} series={[{ label: "cpu", color: PALETTE[0]! }]} syncKey={`s-${runId}`} />
        <Chart title="Memory" unit="MiB" data={aligned([pts[M.SYS_RSS_MB] ?? cpu, pts[M.SYS_HOST_MEM_USED_MB] ?? cpu])}
               series={[{ label: "process RSS", color: PALETTE[1]! }, { label: "host used", color: PALETTE[3]! }]} syncKey={`s-${runId}`} />
        {gpuChart("util_percent", "GPU utilisation (NVML)", "%")}
        {gpuChart("mem_used_mb", "GPU memory used (NVML, all processes)", "MiB")}
        {gpuChart("power_w", "GPU power", "W")}
        {gpuChart("temp_c", "GPU temperature", "°C")}
      </div>
    </section>
  );
}
