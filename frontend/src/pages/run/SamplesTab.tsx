/** Samples: eval prompts and responses with their rewards, step by step. */
import { useMemo, useState } from "react";
import { useSamples } from "../../api/queries";
import { Empty, ErrorState, Loading } from "../../components/common";
import { useLiveVersion } from "../../hooks/useRunLive";
import { fmtNum } from "../../lib/format";
import type { TabProps } from "./tabProps";

export default function SamplesTab({ run, store }: TabProps) {
  const q = useSamples(run.id);
  useLiveVersion(store, ["@evals"]); // the run hook refetches samples on each eval event
  const [filter, setFilter] = useState("");
  const steps = useMemo(() => [...new Set((q.data ?? []).map((s) => s.step ?? -1))].sort((a, b) => b - a), [q.data]);
  const [step, setStep] = useState<number | null>(null);
  const shown = step ?? steps[0] ?? null;
  const rows = useMemo(() => (q.data ?? []).filter((s) => (s.step ?? -1) === shown)
    .filter((s) => !filter || `${s.prompt} ${s.response}`.toLowerCase().includes(filter.toLowerCase())), [q.data, shown, filter]);
  const mean = rows.length ? rows.reduce((a, s) => a + s.reward, 0) / rows.length : null;

  if (q.isPending) return <Loading what="samples" />;
  if (q.isError) return <ErrorState error={q.error} retry={() => void q.refetch()} />;
  if (steps.length === 0) return <Empty title="No eval samples yet.">They are logged at each evaluation (train.eval_every).</Empty>;
  return (
    <div className="samples">
      <div className="toolbar">
        <label>Evaluation at step{" "}
          <select value={shown ?? ""} onChange={(e) => setStep(Number(e.target.value))}>
            {steps.map((s) => <option key={s} value={s}>{s}</option>)}
          </select>
        </label>
        <label>Filter <input type="search" value={filter} onChange={(e) => setFilter(e.target.value)} placeholder="text in prompt or response" /></label>
        <span className="muted">{rows.length} samples, mean reward {fmtNum(mean)}</span>
      </div>
      <table className="samples-table">
        <thead><tr><th scope="col">Prompt</th><th scope="col">Response</th><th scope="col">Reward</th></tr></thead>
        <tbody>
          {rows.map((s, i) => (
            <tr key={i}>
              <td>{s.prompt}</td>
              <td className="response">{s.response}</td>
              <td className={`num ${s.reward >= 0 ? "pos" : "neg"}`}>{fmtNum(s.reward)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
