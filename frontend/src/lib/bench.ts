/** Benchmark hooks (benchmarks/bench_ui.py), compiled in only by `npm run build:bench`, which sets
 * VITE_RLHFKIT_BENCH=1: the product build has neither the render counter nor the /bench/chart page
 * (Vite replaces the flag with a constant and the minifier drops the dead code). */

export const BENCH: boolean = import.meta.env.VITE_RLHFKIT_BENCH === "1";

declare global {
  interface Window {
    /** Render counts per chart id (read by benchmarks/bench_ui.py). */
    __rlhfkitRenders?: Record<string, number>;
  }
}

/** Count a render of chart `id` (bench builds only: lets the benchmark check that live updates stay local). */
export function countRender(id: string): void {
  if (!BENCH || typeof window === "undefined") return;
  const r = (window.__rlhfkitRenders ??= {});
  r[id] = (r[id] ?? 0) + 1;
}
