/** Interactive flame graph on a canvas: click a frame to zoom into it, Escape or "Reset zoom" to go
 * back, search highlights matching frames and reports their share, hover shows time and share. */
import { useEffect, useMemo, useRef, useState } from "react";
import { colorFor, fmtFrameValue, hitTest, layout, maxDepth, search, type FlameNode, type FlameRect } from "../lib/flame";
import { cssVar, useTheme } from "../hooks/useTheme";
import { fmtNum } from "../lib/format";

const ROW = 18;

export interface FlameGraphProps {
  root: FlameNode;
  unit: string;
  title: string;
}

export function FlameGraph({ root, unit, title }: FlameGraphProps) {
  const [theme] = useTheme();
  const [focus, setFocus] = useState<FlameNode>(root);
  const [query, setQuery] = useState("");
  const [hover, setHover] = useState<{ rect: FlameRect; x: number; y: number } | null>(null);
  const [width, setWidth] = useState(800);
  const canvas = useRef<HTMLCanvasElement>(null);
  const wrap = useRef<HTMLDivElement>(null);

  useEffect(() => setFocus(root), [root]);
  const rects = useMemo(() => layout(focus, 1 / (width * 2)), [focus, width]);
  const found = useMemo(() => search(root, query), [root, query]);
  const height = (maxDepth(rects) + 1) * ROW;

  useEffect(() => {
    const el = wrap.current;
    if (!el) return;
    // the canvas fills the padded box: clientWidth minus the padding
    const ro = new ResizeObserver(() => {
      const cs = getComputedStyle(el);
      setWidth(Math.max(200, Math.floor(el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight))));
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  useEffect(() => {
    const c = canvas.current;
    if (!c) return;
    const dpr = window.devicePixelRatio || 1;
    c.width = width * dpr;
    c.height = height * dpr;
    const ctx = c.getContext("2d");
    if (!ctx) return;
    ctx.scale(dpr, dpr);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "12px ui-monospace, monospace";
    ctx.textBaseline = "middle";
    const dim = cssVar("--flame-dim", "#555");
    const dimText = cssVar("--muted", "#999");
    const text = "#111";
    for (const r of rects) {
      const x = r.x0 * width;
      const w = Math.max(1, (r.x1 - r.x0) * width - 1);
      const y = r.depth * ROW;
      const matched = found.matches.size === 0 || found.matches.has(r.node);
      ctx.fillStyle = matched ? (found.matches.size && found.matches.has(r.node) ? "#e05dd6" : colorFor(r.node.name)) : dim;
      ctx.fillRect(x, y, w, ROW - 1);
      if (w > 30) {
        ctx.save();
        ctx.beginPath();
        ctx.rect(x, y, w - 2, ROW);
        ctx.clip();
        ctx.fillStyle = matched ? text : dimText;
        ctx.fillText(r.node.name, x + 3, y + ROW / 2);
        ctx.restore();
      }
    }
  }, [rects, width, height, found, theme]);

  const share = (n: FlameNode) => (root.value ? (100 * n.value) / root.value : 0);
  const onMove = (e: React.MouseEvent<HTMLCanvasElement>) => {
    const b = e.currentTarget.getBoundingClientRect();
    const r = hitTest(rects, e.clientX - b.left, e.clientY - b.top, width, ROW);
    setHover(r ? { rect: r, x: e.clientX - b.left, y: e.clientY - b.top } : null);
  };
  const onClick = (e: React.MouseEvent<HTMLCanvasElement>) => {
    const b = e.currentTarget.getBoundingClientRect();
    const r = hitTest(rects, e.clientX - b.left, e.clientY - b.top, width, ROW);
    if (r) setFocus(r.node);
  };
  const onKey = (e: React.KeyboardEvent) => {
    if (e.key === "Escape") setFocus(root);
    if (e.key === "ArrowUp" && focus.parent) setFocus(focus.parent);
    if (e.key === "ArrowDown" && focus.children[0]) {
      setFocus([...focus.children].sort((a, b) => b.value - a.value)[0]!);
    }
  };

  return (
    <div className="flame" ref={wrap}>
      <div className="toolbar">
        <label>
          Search frames{" "}
          <input type="search" value={query} onChange={(e) => setQuery(e.target.value)} placeholder="e.g. update" />
        </label>
        {query ? (
          <span className="muted" role="status">
            {found.matches.size} {found.matches.size === 1 ? "frame matches" : "frames match"},{" "}
            {fmtNum(root.value ? (100 * found.value) / root.value : 0, 3)} % of total
          </span>
        ) : null}
        <button type="button" onClick={() => setFocus(root)} disabled={focus === root}>Reset zoom</button>
        <span className="muted">
          Focus: <strong>{focus.name}</strong> ({fmtFrameValue(focus.value, unit)}, {fmtNum(share(focus), 3)} %)
        </span>
      </div>
      <canvas
        ref={canvas}
        style={{ width, height }}
        tabIndex={0}
        role="img"
        aria-label={`${title}: flame graph with ${rects.length} frames. Click a frame to zoom, Escape to reset, arrow keys to move the focus.`}
        data-frames={rects.length}
        onMouseMove={onMove}
        onMouseLeave={() => setHover(null)}
        onClick={onClick}
        onKeyDown={onKey}
      />
      {hover ? (
        <div className="flame-tip" style={{ left: Math.min(hover.x + 12, width - 260), top: hover.y + 16 }} role="tooltip">
          <strong>{hover.rect.node.name}</strong>
          <div>{fmtFrameValue(hover.rect.node.value, unit)} total, {fmtFrameValue(hover.rect.node.self, unit)} self</div>
          <div>{fmtNum(share(hover.rect.node), 3)} % of all{hover.rect.node.parent ? `, ${fmtNum((100 * hover.rect.node.value) / (hover.rect.node.parent.value || 1), 3)} % of ${hover.rect.node.parent.name}` : ""}</div>
        </div>
      ) : null}
    </div>
  );
}
