/** The run page's downloads: the offline HTML report (`rlhfkit report`) and the metrics table as CSV
 * or Parquet (the columns of the run folder's metrics.csv). Plain links when the server needs no
 * token; with one, downloadWithAuth fetches the file with the token and saves it from memory. */
import { downloadWithAuth } from "../api/client";
import type { paths } from "../client/schema";

type RunPath = Extract<keyof paths, "/api/runs/{run_id}/report" | "/api/runs/{run_id}/export">;

/** A route of the generated schema with the run id filled in (tsc fails if the route goes away). */
function runUrl(path: RunPath, runId: string, query = ""): string {
  return path.replace("{run_id}", encodeURIComponent(runId)) + query;
}

export function RunDownloads({ runId }: { runId: string }) {
  const links = [
    { label: "Download report", url: runUrl("/api/runs/{run_id}/report", runId), file: `${runId}-report.html`,
      title: "One HTML file with the charts, alerts, timings, memory and samples; opens offline" },
    { label: "Export CSV", url: runUrl("/api/runs/{run_id}/export", runId, "?format=csv"), file: `${runId}-metrics.csv`,
      title: "Every step's metrics, the columns of the run folder's metrics.csv" },
    { label: "Export Parquet", url: runUrl("/api/runs/{run_id}/export", runId, "?format=parquet"),
      file: `${runId}-metrics.parquet`, title: "The same table as Parquet (pandas, polars, DuckDB)" },
  ];
  return (
    <>
      {links.map((l) => (
        <a key={l.label} className="button" href={l.url} download={l.file} title={l.title}
           onClick={(e) => downloadWithAuth(e, l.url, l.file)}>{l.label}</a>
      ))}
    </>
  );
}
