/** A page for benchmarks/bench_ui.py: one chart with `?n=` points per series (default 100,000), its
 * uPlot instance on window.__benchPlot so the script can time pan and zoom frames. */
import { useMemo } from "react";
import { useSearchParams } from "react-router-dom";
import type uPlot from "uplot";
import { Chart, PALETTE } from "../components/Chart";

declare global {
  interface Window {
    __benchPlot?: uPlot;
  }
}

export default function ChartBench() {
  const [params] = useSearchParams();
  const n = Math.min(2_000_000, Number(params.get("n") ?? 100_000));
  const data = useMemo(() => {
    const x = new Array<number>(n);
    const a = new Array<number>(n);
    const b = new Array<number>(n);
    let v = 0;
    for (let i = 0; i < n; i++) {
      x[i] = i;
      v += Math.sin(i * 0.001) * 0.1 + (Math.random() - 0.5);
      a[i] = v;
      b[i] = v * 0.5 + Math.cos(i * 0.01) * 5;
    }
    return [x, a, b] as [number[], number[], number[]];
  }, [n]);
  return (
    <section>
      <h1>Chart benchmark ({n.toLocaleString()} points per series)</h1>
      <Chart title="bench" unit="1" data={data} height={400} onReady={(u) => { window.__benchPlot = u; }}
             series={[{ label: "a", color: PALETTE[0]! }, { label: "b", color: PALETTE[1]! }]} />
    </section>
  );
}
