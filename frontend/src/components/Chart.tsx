/** A uPlot chart. The plot is created once per shape (series, theme, scale) and fed with setData
 * afterwards, so a live point costs one redraw of this chart and nothing else. Hover crosshairs
 * sync across charts sharing `syncKey`; a drag selects a step range (`onZoom`), double-click resets. */
import { memo, useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { cssVar, useTheme } from "../hooks/useTheme";
import { fmtAxis } from "../lib/format";

export interface ChartSeries {
  label: string;
  color: string;
  width?: number;
  dash?: number[];
  /** Fill towards the band partner or the axis (stacked areas). */
  fill?: string;
  /** Hidden helper series (band edges) stay out of the legend. */
  helper?: boolean;
  /** Mark every point (sparse series such as evaluations, where the steps measured matter). */
  points?: boolean;
}

export interface Marker {
  step: number;
  label: string;
  severity: string;
}

export interface ChartProps {
  title: string;
  unit: string;
  /** What the plotted numbers are and how they were measured (hover help). */
  description?: string;
  /** [steps, ...ys]: uPlot's aligned data. */
  data: uPlot.AlignedData;
  series: ChartSeries[];
  bands?: uPlot.Band[];
  logY?: boolean;
  syncKey?: string;
  markers?: Marker[];
  /** Horizontal reference line (e.g. the KL target). */
  refLine?: { value: number; label: string };
  height?: number;
  onZoom?: (start: number, end: number) => void;
  onResetZoom?: () => void;
  xLabel?: string;
  /** uPlot instance for benchmarks and tests. */
  onReady?: (u: uPlot) => void;
}

/** Steps are integers: never tick at 0.5. */
const STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10_000, 20_000, 25_000, 50_000,
  100_000, 200_000, 250_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000];

function ChartImpl(props: ChartProps) {
  const { title, data, series, bands, logY, syncKey, height = 220, xLabel = "step" } = props;
  const unit = shownUnit(props.unit);
  const [theme] = useTheme();
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const latest = useRef(props);
  latest.current = props;
  const shape = JSON.stringify([series, bands ?? null, !!logY, syncKey ?? null, theme, unit, xLabel, height]);

  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const grid = cssVar("--grid");
    const axis = cssVar("--muted");
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      // space for the legend below the plot
      legend: { live: true },
      cursor: {
        sync: syncKey ? { key: syncKey } : undefined,
        drag: { x: true, y: false, setScale: true },
      },
      scales: { x: { time: false }, y: logY ? { distr: 3 } : {} },
      axes: [
        { stroke: axis, grid: { stroke: grid }, ticks: { stroke: grid }, label: xLabel, labelSize: 18,
          incrs: STEP_INCRS, values: (_u, splits, _a, _s, incr) => splits.map((v) => fmtAxis(v, incr)) },
        { stroke: axis, grid: { stroke: grid }, ticks: { stroke: grid }, label: unit || undefined, labelSize: unit ? 18 : 0, size: 60,
          values: (_u, splits, _a, _s, incr) => splits.map((v) => fmtAxis(v, incr)) },
      ],
      series: [
        { label: xLabel },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: s.width ?? 1.5,
          dash: s.dash,
          fill: s.fill,
          show: true,
          points: s.points ? { show: true, size: 7 } : { show: false },
          spanGaps: true,
          ...(s.helper ? { legend: false } : {}),
        })),
      ],
      bands,
      hooks: {
        setSelect: [
          (u) => {
            if (u.select.width < 2) return;
            const a = u.posToVal(u.select.left, "x");
            const b = u.posToVal(u.select.left + u.select.width, "x");
            latest.current.onZoom?.(Math.max(0, Math.floor(a)), Math.ceil(b));
          },
        ],
        draw: [
          (u) => {
            const { markers, refLine } = latest.current;
            const ctx = u.ctx;
            ctx.save();
            if (refLine) {
              const y = u.valToPos(refLine.value, "y", true);
              if (y >= u.bbox.top && y <= u.bbox.top + u.bbox.height) {
                ctx.strokeStyle = cssVar("--warn");
                ctx.setLineDash([6, 4]);
                ctx.beginPath();
                ctx.moveTo(u.bbox.left, y);
                ctx.lineTo(u.bbox.left + u.bbox.width, y);
                ctx.stroke();
                ctx.setLineDash([]);
                ctx.fillStyle = cssVar("--warn");
                ctx.font = `${11 * devicePixelRatio}px sans-serif`;
                ctx.fillText(refLine.label, u.bbox.left + 4, y - 4);
              }
            }
            for (const m of markers ?? []) {
              const x = u.valToPos(m.step, "x", true);
              if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
              ctx.strokeStyle = m.severity === "critical" ? cssVar("--bad") : cssVar("--warn");
              ctx.lineWidth = 1.5 * devicePixelRatio;
              ctx.setLineDash([3, 3]);
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
            }
            ctx.restore();
          },
        ],
      },
    };
    const u = new uPlot(opts, latest.current.data, el);
    plot.current = u;
    u.over.addEventListener("dblclick", () => latest.current.onResetZoom?.());
    latest.current.onReady?.(u);
    const ro = new ResizeObserver(() => {
      const w = Math.max(200, el.clientWidth);
      if (Math.abs(w - u.width) > 1) u.setSize({ width: w, height });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, [shape]);

  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);

  useEffect(() => {
    const u = plot.current;
    // uPlot lays its axes out on its first commit; a redraw before that finds no axis sizes
    if (u && u.status === 1) u.redraw(false, false);
  }, [props.markers, props.refLine]);

  const points = data[0]?.length ?? 0;
  return (
    <figure className="chart" aria-label={`${title}${unit ? ` (${unit})` : ""} chart, ${points} points`} data-points={points}>
      <figcaption>
        <span className="chart-title">{title}</span>{unit ? <> <span className="unit">[{unit}]</span></> : null}
        {props.description ? <> <InfoIcon text={props.description} /></> : null}
      </figcaption>
      {points === 0 ? <div className="chart-empty">No points yet</div> : null}
      <div ref={host} className="chart-host" />
    </figure>
  );
}

export const Chart = memo(ChartImpl);

/** The unit as a chart shows it: none for dimensionless metrics (the contract's "1"), never "[1]". */
export function shownUnit(unit: string | null | undefined): string {
  return !unit || unit === "1" ? "" : unit;
}

/** The hover help mark, drawn as inline SVG: a font without the ⓘ glyph would show an empty box. */
export function InfoIcon({ text }: { text: string }) {
  return (
    <span className="info" title={text} aria-label={text} role="img" tabIndex={0}>
      <svg width="13" height="13" viewBox="0 0 16 16" aria-hidden="true" focusable="false">
        <circle cx="8" cy="8" r="7" fill="none" stroke="currentColor" strokeWidth="1.5" />
        <rect x="7.25" y="7" width="1.5" height="5" rx="0.5" fill="currentColor" />
        <circle cx="8" cy="4.6" r="1" fill="currentColor" />
      </svg>
    </span>
  );
}

/** A categorical palette that reads on both themes. */
export const PALETTE = ["#4e9cff", "#ff8c42", "#3ecf8e", "#e05dd6", "#f2c94c", "#56ccf2", "#eb5757", "#9b8afb"];
