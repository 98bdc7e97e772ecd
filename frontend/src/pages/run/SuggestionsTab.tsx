/** Suggestions: config changes ranked by the server's `suggest_config` (predicted peak memory and
 * throughput within a memory budget the user sets), and the stability alerts' suggested actions.
 * "Launch with this config" opens the New run form pre-filled with the candidate's full config. */
import { useState } from "react";
import { useNavigate } from "react-router-dom";
import { ApiError, type SuggestionCandidate, type SuggestionsPublic } from "../../api/client";
import { useAlerts, useSuggestions, type SuggestionsQuery } from "../../api/queries";
import { Empty, ErrorState, Loading } from "../../components/common";
import { fmtNum } from "../../lib/format";
import { changesFrom, fmtMiB, fmtValue, MAX_BUDGET_GB, parseBudget } from "../../lib/suggestions";
import type { TabProps } from "./tabProps";

type DeviceChoice = "" | "cpu" | "cuda";

export default function SuggestionsTab({ run }: TabProps) {
  const navigate = useNavigate();
  const alerts = useAlerts(run.id);
  const [query, setQuery] = useState<SuggestionsQuery>({});
  const [draft, setDraft] = useState<string | null>(null); // null: show the budget the server used
  const [device, setDevice] = useState<DeviceChoice>("");
  const [budgetError, setBudgetError] = useState<string | null>(null);
  const sugg = useSuggestions(run.id, query);
  const data = sugg.data;
  const actions = [...new Map((alerts.data ?? []).filter((a) => a.suggestion).map((a) => [a.rule, a])).values()];

  const apply = (e: React.FormEvent) => {
    e.preventDefault();
    const dev = device ? { device } : {};
    if (draft === null) { // budget untouched: the server's default for the chosen device
      setBudgetError(null);
      setQuery(dev);
      return;
    }
    const parsed = parseBudget(draft);
    if ("error" in parsed) {
      setBudgetError(parsed.error);
      return;
    }
    setBudgetError(null);
    setQuery({ budget_gb: parsed.gb, ...dev });
  };
  const launch = (c: SuggestionCandidate) => navigate("/new", { state: { config: c.config } });
  const conflict = sugg.error instanceof ApiError && sugg.error.status === 409 ? sugg.error.message : null;

  return (
    <div className="suggestions">
      <section aria-labelledby="cfg-h">
        <h2 id="cfg-h">Config suggestions</h2>
        {conflict !== null ? (
          <Empty title="No config suggestions for this run.">
            {conflict}. Suggestions are computed from an rlhfkit RunConfig
            (<code>rlhfkit suggest-config</code> does the same from a YAML file).
          </Empty>
        ) : (
          <>
            <form className="toolbar" onSubmit={apply} aria-label="Suggestion settings">
              <label>
                Memory budget (GiB)
                <input
                  inputMode="decimal"
                  size={7}
                  value={draft ?? (data ? String(data.budget_gb) : "")}
                  onChange={(e) => setDraft(e.target.value)}
                  aria-invalid={budgetError ? true : undefined}
                  aria-describedby={budgetError ? "budget-err" : undefined}
                  title={`More than 0, at most ${MAX_BUDGET_GB} GiB`}
                />
              </label>
              <label>
                Device
                <select value={device} onChange={(e) => setDevice(e.target.value as DeviceChoice)}>
                  <option value="">the run's{data && !query.device ? ` (${data.device})` : ""}</option>
                  <option value="cpu">cpu</option>
                  <option value="cuda">cuda</option>
                </select>
              </label>
              <button type="submit">Update</button>
              {budgetError ? <span id="budget-err" className="field-error" role="alert">{budgetError}</span> : null}
              {sugg.isFetching && data ? <span className="muted" role="status">Updating…</span> : null}
            </form>
            {sugg.isPending ? <Loading what="config suggestions (the search takes a few seconds)" />
              : sugg.isError ? <ErrorState error={sugg.error} retry={() => void sugg.refetch()} />
              : <CandidatesTable data={sugg.data} runConfig={run.config} onLaunch={launch} />}
          </>
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

function CandidatesTable({ data, runConfig, onLaunch }: {
  data: SuggestionsPublic;
  runConfig: Record<string, unknown>;
  onLaunch: (c: SuggestionCandidate) => void;
}) {
  const limitMiB = data.budget_gb * 1024 * (1 - data.headroom);
  const nothingFits = data.candidates.length > 0 && !data.candidates[0]!.fits;
  return (
    <>
      <p className="muted">
        Budget {fmtNum(data.budget_gb)} GiB on {data.device}, {Math.round(data.headroom * 100)}% kept free: a candidate
        fits when its predicted peak is under {fmtMiB(limitMiB)}. Peak memory comes from the analytic memory model
        ({data.device === "cuda" ? "device memory" : "process RSS growth"}); throughput from a ranking model, good for
        comparing candidates rather than as a speed promise. Best first.
      </p>
      {nothingFits ? (
        <div className="callout" role="note">Nothing fits this budget: the candidates below are the smallest the search found.</div>
      ) : null}
      {data.candidates.length === 0 ? <Empty title="The search returned no candidates." /> : (
        <div className="table-wrap">
          <table className="suggestions-table">
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">Changes (run → suggested)</th>
                <th scope="col" className="num">Predicted peak memory</th>
                <th scope="col" className="num">Predicted throughput</th>
                <th scope="col">Fits budget</th>
                <th scope="col">Notes</th>
                <th scope="col"><span className="sr-only">Launch</span></th>
              </tr>
            </thead>
            <tbody>
              {data.candidates.map((c, i) => (
                <tr key={i} data-fits={c.fits}>
                  <td className="num">{i + 1}</td>
                  <td>
                    <div><strong>{c.title}</strong></div>
                    {changesFrom(runConfig, c.overrides).map((ch) => (
                      <div key={ch.key}><code>{ch.key}</code>: {fmtValue(ch.from)} → {fmtValue(ch.to)}</div>
                    ))}
                  </td>
                  <td className="num">{fmtMiB(c.predicted_peak_mb)}</td>
                  <td className="num">{fmtNum(c.predicted_tokens_per_sec)} tokens/s</td>
                  <td className={c.fits ? "status-succeeded" : "status-failed"}>{c.fits ? "fits" : "over budget"}</td>
                  <td>{c.notes.length ? c.notes.map((n) => <div key={n} className="muted">{n}</div>) : <span className="muted">—</span>}</td>
                  <td><button type="button" onClick={() => onLaunch(c)}>Launch with this config</button></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
