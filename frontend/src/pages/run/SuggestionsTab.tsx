/** Suggestions: row 0 (the run's config, predicted and measured), then the server's candidates in
 * two groups — same math (identical updates) and changes the algorithm (saying what) — each with
 * its change against row 0; notes common to all rows once above the table. "Launch with this
 * config" opens the New run form with the candidate's full config and where it came from. */
import { useState } from "react";
import { useNavigate } from "react-router-dom";
import { ApiError, type SuggestionCandidate, type SuggestionsPublic } from "../../api/client";
import { useAlerts, useSuggestions, type SuggestionsQuery } from "../../api/queries";
import { Empty, ErrorState, Loading } from "../../components/common";
import { fmtNum } from "../../lib/format";
import {
  changesFrom, fmtMiB, fmtPct, fmtRatio, fmtValue, type LaunchSource, MAX_BUDGET_GB, parseBudget,
} from "../../lib/suggestions";
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
  const launch = (c: SuggestionCandidate, index: number) => {
    const source: LaunchSource = {
      runId: run.id, runName: run.name, index, changes: changesFrom(run.config, c.overrides), group: c.group,
      predictedPeakMb: c.predicted_peak_mb, predictedTokensPerSec: c.predicted_tokens_per_sec,
    };
    navigate("/new", { state: { config: c.config, base: run.config, source } });
  };
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

const GROUPS = [
  { group: "same_math", title: "Same math", blurb: "identical updates; only how the step is computed changes" },
  { group: "changes_algorithm", title: "Changes the algorithm", blurb: "a different learning algorithm: read what each row changes" },
] as const;

function CandidatesTable({ data, runConfig, onLaunch }: {
  data: SuggestionsPublic;
  runConfig: Record<string, unknown>;
  onLaunch: (c: SuggestionCandidate, index: number) => void;
}) {
  const limitMiB = data.budget_gb * 1024 * (1 - data.headroom);
  const cur = data.current;
  const nothingFits = data.candidates.length > 0 && data.candidates.every((c) => !c.fits);
  const numbered = data.candidates.map((c, i) => ({ c, n: i + 1 }));
  return (
    <>
      <p className="muted">
        Budget {fmtNum(data.budget_gb)} GiB on {data.device}, {Math.round(data.headroom * 100)}% kept free: a candidate
        fits when its predicted peak is under {fmtMiB(limitMiB)}. Each group is ranked by predicted throughput.
      </p>
      <ul className="suggestion-notes" aria-label="Notes for every row">
        <li>Memory: {data.memory_footing}.</li>
        {data.notes.filter((n) => !n.startsWith("memory: ")).map((n) => <li key={n}>{n}</li>)}
      </ul>
      {nothingFits ? (
        <div className="callout" role="note">Nothing fits this budget: the candidates below are the smallest the search found.</div>
      ) : null}
      <div className="table-wrap">
        <table className="suggestions-table">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Changes (run → suggested)</th>
              <th scope="col" className="num">Peak memory (growth, MiB)</th>
              <th scope="col" className="num">Throughput (tokens/s)</th>
              <th scope="col">Fits budget</th>
              <th scope="col">Notes</th>
              <th scope="col"><span className="sr-only">Launch</span></th>
            </tr>
          </thead>
          <tbody>
            <tr className="current-row" data-row="0">
              <td className="num">0</td>
              <td><strong>{cur.title}</strong></td>
              <td className="num">
                <div>predicted {fmtMiB(cur.predicted_peak_mb)}</div>
                <div>measured {fmtMiB(cur.measured_peak_mb)}</div>
              </td>
              <td className="num">
                <div>predicted {fmtNum(cur.predicted_tokens_per_sec)}</div>
                <div>measured {cur.measured_tokens_per_sec == null ? "—" : fmtNum(cur.measured_tokens_per_sec)}</div>
              </td>
              <td className={cur.fits ? "status-succeeded" : "status-failed"}>{cur.fits ? "fits" : "over budget"}</td>
              <td className="muted">{cur.measured_note}</td>
              <td />
            </tr>
            {GROUPS.map(({ group, title, blurb }) => {
              const rows = numbered.filter(({ c }) => c.group === group);
              return [
                <tr key={`h-${group}`} className="group-row" data-group={group}>
                  <th scope="rowgroup" colSpan={7}>{title} <span className="muted">— {blurb}</span></th>
                </tr>,
                rows.length === 0 ? (
                  <tr key={`e-${group}`}><td colSpan={7} className="muted">No candidate in this group.</td></tr>
                ) : rows.map(({ c, n }) => (
                  <tr key={n} data-fits={c.fits} data-group={group}>
                    <td className="num">{n}</td>
                    <td>
                      <div><strong>{c.title}</strong></div>
                      {changesFrom(runConfig, c.overrides).map((ch) => (
                        <div key={ch.key}><code>{ch.key}</code>: {fmtValue(ch.from)} → {fmtValue(ch.to)}</div>
                      ))}
                      {c.changes.map((w) => <div key={w} className="changes-algorithm">Changes: {w}</div>)}
                    </td>
                    <td className="num">{fmtMiB(c.predicted_peak_mb)} <span className="delta">({fmtPct(c.peak_change_pct)})</span></td>
                    <td className="num">{fmtNum(c.predicted_tokens_per_sec)} <span className="delta">({fmtRatio(c.tokens_per_sec_ratio)})</span></td>
                    <td className={c.fits ? "status-succeeded" : "status-failed"}>{c.fits ? "fits" : "over budget"}</td>
                    <td>{c.notes.length ? c.notes.map((x) => <div key={x} className="muted">{x}</div>) : <span className="muted">—</span>}</td>
                    <td><button type="button" onClick={() => onLaunch(c, n)}>Launch with this config</button></td>
                  </tr>
                )),
              ];
            })}
          </tbody>
        </table>
      </div>
    </>
  );
}
