/** Suggestions: config changes with their predicted memory and throughput (from the run's
 * `suggestions` / `mem_report` artifacts), and the stability alerts' suggested actions. "Launch with
 * this config" opens the New run form pre-filled. */
import { useQuery } from "@tanstack/react-query";
import { useNavigate } from "react-router-dom";
import type { ArtifactPublic } from "../../api/client";
import { useAlerts, useArtifacts } from "../../api/queries";
import { Empty, ErrorState, Loading } from "../../components/common";
import { fmtMB, fmtNum } from "../../lib/format";
import { setAt } from "../../lib/schemaForm";
import type { TabProps } from "../RunPage";

export interface Suggestion {
  title: string;
  overrides: Record<string, unknown>;
  predicted_peak_mb?: number | null;
  predicted_tokens_per_sec?: number | null;
  notes?: string;
}

/** Read suggestions from an artifact: a list, or an object with `suggestions`. Unknown shapes give []. */
export function parseSuggestions(json: unknown): Suggestion[] {
  const list = Array.isArray(json) ? json : (json as { suggestions?: unknown })?.suggestions;
  if (!Array.isArray(list)) return [];
  return list.flatMap((s, i): Suggestion[] => {
    if (!s || typeof s !== "object") return [];
    const o = s as Record<string, unknown>;
    const overrides = (o.overrides ?? o.changes ?? {}) as Record<string, unknown>;
    const num = (k: string) => (typeof o[k] === "number" ? (o[k] as number) : null);
    return [{
      title: typeof o.title === "string" ? o.title : typeof o.name === "string" ? o.name : `Suggestion ${i + 1}`,
      overrides: overrides && typeof overrides === "object" ? overrides : {},
      predicted_peak_mb: num("predicted_peak_mb") ?? num("peak_mb"),
      predicted_tokens_per_sec: num("predicted_tokens_per_sec") ?? num("tokens_per_sec"),
      notes: typeof o.notes === "string" ? o.notes : typeof o.reason === "string" ? o.reason : undefined,
    }];
  });
}

const isSuggestionArtifact = (a: ArtifactPublic) => a.kind === "suggestions" || a.kind === "mem_report" || a.name.includes("suggest");

export default function SuggestionsTab({ run }: TabProps) {
  const navigate = useNavigate();
  const arts = useArtifacts(run.id);
  const alerts = useAlerts(run.id);
  const src = arts.data?.find(isSuggestionArtifact);
  const sugg = useQuery({
    queryKey: ["run", run.id, "suggestions-file", src?.name ?? ""],
    queryFn: async () => parseSuggestions(await (await fetch(src!.url)).json()),
    enabled: !!src,
  });
  const launch = (s: Suggestion) => {
    let cfg = run.config as Record<string, unknown>;
    for (const [k, v] of Object.entries(s.overrides)) cfg = setAt(cfg, k.split("."), v);
    navigate("/new", { state: { config: cfg } });
  };
  const actions = [...new Map((alerts.data ?? []).filter((a) => a.suggestion).map((a) => [a.rule, a])).values()];

  if (arts.isPending) return <Loading what="suggestions" />;
  if (arts.isError) return <ErrorState error={arts.error} />;
  return (
    <div className="suggestions">
      <section aria-labelledby="cfg-h">
        <h2 id="cfg-h">Config suggestions</h2>
        {!src ? (
          <Empty title="No config suggestions for this run.">
            Suggestions with predicted memory and throughput come from <code>rlhfkit suggest-config</code>
            (<code>make suggest_config</code>); when a run carries them they are listed here with “Launch with this config”.
          </Empty>
        ) : sugg.isPending ? <Loading what={src.name} /> : sugg.isError ? <ErrorState error={sugg.error} /> : (
          <table>
            <thead><tr><th scope="col">Suggestion</th><th scope="col">Changes</th><th scope="col">Predicted peak memory</th><th scope="col">Predicted throughput</th><th scope="col"><span className="sr-only">Launch</span></th></tr></thead>
            <tbody>
              {sugg.data.map((s) => (
                <tr key={s.title}>
                  <td>{s.title}{s.notes ? <div className="muted">{s.notes}</div> : null}</td>
                  <td>{Object.entries(s.overrides).map(([k, v]) => <div key={k}><code>{k}</code> = {JSON.stringify(v)}</div>)}</td>
                  <td className="num">{fmtMB(s.predicted_peak_mb)}</td>
                  <td className="num">{s.predicted_tokens_per_sec ? `${fmtNum(s.predicted_tokens_per_sec)} tokens/s` : "—"}</td>
                  <td><button type="button" onClick={() => launch(s)}>Launch with this config</button></td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <section aria-labelledby="act-h">
        <h2 id="act-h">From stability alerts</h2>
        {actions.length === 0 ? <p className="muted">No alert has suggested an action.</p> : (
          <ul>{actions.map((a) => <li key={a.rule}><code>{a.rule}</code> (step {a.step ?? "—"}): {a.suggestion}</li>)}</ul>
        )}
      </section>
    </div>
  );
}
