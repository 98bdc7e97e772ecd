/** The profiler's report for a profiled run: where the step time goes (per stage, with sub-stages),
 * the bottlenecks in words with the measured evidence beside each, and the top operators. Read from
 * the server's typed `GET /api/runs/{id}/profile` (the run's `profile_summary.json`). */
import type { ProfilePublic, ProfileStage } from "../../api/client";
import { fmtNum, fmtSeconds } from "../../lib/format";

const pct = (x: number | null | undefined) => (x === null || x === undefined ? "—" : `${fmtNum(100 * x, 3)} %`);

function StageRow({ s, sub }: { s: ProfileStage; sub?: boolean }) {
  return (
    <tr className={sub ? "sub" : undefined}>
      <th scope="row">{sub ? `↳ ${s.stage.split("/")[1]}` : s.stage}</th>
      <td className="num">{fmtSeconds(s.mean_s)}</td>
      <td className="num">{fmtSeconds(s.p50_s)}</td>
      <td className="num">{fmtSeconds(s.p95_s)}</td>
      <td><span className="bar" style={{ width: `${Math.min(100, 100 * (s.share ?? 0))}%` }} />{pct(s.share)}</td>
      <td className="num">{s.tokens_per_sec === null ? "—" : fmtNum(s.tokens_per_sec, 4)}</td>
    </tr>
  );
}

/** Bottlenecks in words, then the per-stage table. */
export function ProfileSummary({ p }: { p: ProfilePublic }) {
  const subsOf = (stage: string) => p.substages.filter((s) => s.stage.startsWith(`${stage}/`));
  return (
    <>
      <section aria-labelledby="bn-h">
        <h2 id="bn-h">Bottlenecks</h2>
        {p.bottlenecks.length === 0 ? <p className="muted">This summary holds no findings (runs reported by an adapter, with no rlhfkit config, get the table only).</p> : (
          <ol className="findings">
            {p.bottlenecks.map((f) => (
              <li key={f.finding}>
                <strong>{f.finding}</strong>
                <div className="muted">Measured: {f.evidence}</div>
                <div>Try: {f.try}</div>
              </li>
            ))}
          </ol>
        )}
      </section>
      <section aria-labelledby="stages-h">
        <h2 id="stages-h">Where the step time goes</h2>
        <table className="bars profile-stages">
          <thead>
            <tr>
              <th scope="col">Stage</th><th scope="col">Mean</th><th scope="col">p50</th><th scope="col">p95</th>
              <th scope="col">Share of step</th><th scope="col">Tokens/s</th>
            </tr>
          </thead>
          <tbody>
            {p.stages.flatMap((s) => [<StageRow key={s.stage} s={s} />, ...subsOf(s.stage).map((x) => <StageRow key={x.stage} s={x} sub />)])}
            {p.other_s !== null ? (
              <tr><th scope="row">other (between)</th><td className="num">{fmtSeconds(p.other_s)}</td><td /><td />
                <td><span className="bar" style={{ width: `${Math.max(0, 100 * (1 - (p.coverage ?? 1)))}%` }} />{pct(p.coverage === null ? null : 1 - p.coverage)}</td><td /></tr>
            ) : null}
            <tr className="total"><th scope="row">step</th><td className="num">{fmtSeconds(p.step_time_s)}</td><td /><td /><td>100 %</td>
              <td className="num">{p.tokens_per_sec === null ? "—" : fmtNum(p.tokens_per_sec, 4)}</td></tr>
          </tbody>
        </table>
        <p className="muted">
          Every row of this table is a mean over all {p.steps} steps (device synchronised at stage boundaries; a step
          without an evaluation counts it as 0 s, so the means add up to the step). Tokens/s: generated tokens per
          second of the stage. From <code>{p.artifact}</code>.
        </p>
        {p.traced.length ? (
          <>
            <h3 id="traced-h">Inside the stages: the {p.traced_steps} profiled step{p.traced_steps === 1 ? "" : "s"} only</h3>
            <table className="bars profile-traced" aria-labelledby="traced-h">
              <thead><tr><th scope="col">Stage</th><th scope="col">Mean</th><th scope="col">Share of the stage</th></tr></thead>
              <tbody>
                {p.traced.map((s) => (
                  <tr key={s.stage} className={s.stage.includes("/") ? "sub" : undefined}>
                    <th scope="row">{s.stage.includes("/") ? `↳ ${s.stage.split("/")[1]}` : s.stage}</th>
                    <td className="num">{fmtSeconds(s.mean_s)}</td>
                    <td>{s.stage.includes("/") ? <><span className="bar" style={{ width: `${Math.min(100, 100 * (s.share ?? 0))}%` }} />{pct(s.share)}</> : "100 %"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            <p className="muted">
              From the torch.profiler trace, so every row covers the same profiled steps (which run slower than the
              others: compare these shares with each other, not with the table above).
            </p>
          </>
        ) : null}
      </section>
    </>
  );
}

/** The operators with the most self time in each stage (rows under 50 µs say nothing and are left out). */
export function TopOperators({ p }: { p: ProfilePublic }) {
  const opStages = Object.entries(p.top_ops)
    .map(([stage, ops]) => [stage, ops.filter((o) => o.self_us >= 50).slice(0, 5)] as const)
    .filter(([, ops]) => ops.length > 0);
  if (opStages.length === 0) return null;
  return (
    <details className="top-ops">
      <summary>Top operators per stage (self time over the profiled steps)</summary>
      <table>
        <thead><tr><th scope="col">Stage</th><th scope="col">Operator</th><th scope="col">Self time</th><th scope="col">Calls</th></tr></thead>
        <tbody>
          {opStages.flatMap(([stage, ops]) => ops.map((o, i) => (
            <tr key={`${stage}-${o.op}`}>
              {i === 0 ? <th scope="row" rowSpan={ops.length}>{stage}</th> : null}
              <td><code>{o.op}</code></td>
              <td className="num">{fmtSeconds(o.self_us / 1e6)}</td>
              <td className="num">{o.calls.toLocaleString("en-US")}</td>
            </tr>
          )))}
        </tbody>
      </table>
    </details>
  );
}
