/** Profile: the run's profiler output — bottlenecks in words, where the step time goes, an interactive
 * flame graph and the top operators — with downloads of the Chrome / Perfetto trace and the speedscope
 * file. Without profiler output, the flame graph is built from the run's stage timings and says so. */
import { useQuery } from "@tanstack/react-query";
import { useMemo } from "react";
import { ApiError, downloadWithAuth, fetchWithAuth, type ArtifactPublic } from "../../api/client";
import { isActive, useArtifacts, useProfile, useTimings } from "../../api/queries";
import { Empty, ErrorState, Loading } from "../../components/common";
import { FlameGraph } from "../../components/FlameGraph";
import { fmtBytes } from "../../lib/format";
import { fromCollapsed, fromSpeedscope, fromTimings, isSpeedscope, type FlameNode } from "../../lib/flame";
import type { TabProps } from "./tabProps";
import { ProfileSummary, TopOperators } from "./ProfileReport";

const isSpeedscopeArtifact = (a: ArtifactPublic) => a.kind === "speedscope" || a.name.endsWith(".speedscope.json");
const isCollapsed = (a: ArtifactPublic) => a.kind === "collapsed" || a.name.endsWith(".collapsed") || a.name.endsWith(".folded");

async function loadProfile(a: ArtifactPublic): Promise<{ root: FlameNode; unit: string }> {
  const res = await fetchWithAuth(a.url);
  if (!res.ok) throw new Error(`download of ${a.name} failed: HTTP ${res.status}`);
  if (isCollapsed(a)) return { root: fromCollapsed(await res.text(), a.name), unit: "samples" };
  const json: unknown = await res.json();
  if (!isSpeedscope(json)) throw new Error(`${a.name} is not a speedscope file`);
  return fromSpeedscope(json);
}

export default function ProfileTab({ run }: TabProps) {
  const arts = useArtifacts(run.id);
  const timings = useTimings(run.id);
  const source = arts.data?.find(isSpeedscopeArtifact) ?? arts.data?.find(isCollapsed);
  const profile = useQuery({
    queryKey: ["run", run.id, "profile", source?.name ?? ""],
    queryFn: () => loadProfile(source!),
    enabled: !!source,
    staleTime: Infinity,
  });
  const summaryArtifact = arts.data?.find((a) => a.kind === "profile_summary" && a.name.endsWith(".json"))?.name;
  const report = useProfile(run.id, summaryArtifact);
  const fallback = useMemo(() => (timings.data?.length ? fromTimings(timings.data) : null), [timings.data]);
  const downloads = (arts.data ?? []).filter((a) => ["trace", "speedscope", "profile_summary", "mem_report", "collapsed"].includes(a.kind)
    || isSpeedscopeArtifact(a) || a.name.endsWith(".json.gz") || a.name.includes("trace"));

  if (arts.isPending) return <Loading what="artifacts" />;
  if (arts.isError) return <ErrorState error={arts.error} retry={() => void arts.refetch()} />;

  const reportGone = report.error instanceof ApiError && report.error.status === 404;
  return (
    <div className="profile">
      {summaryArtifact ? (
        report.isPending ? <Loading what="profile summary" />
          : report.isError ? (reportGone ? null : <ErrorState error={report.error} retry={() => void report.refetch()} />)
            : <ProfileSummary p={report.data} />
      ) : source && isActive(run) ? (
        <p className="muted" role="note">The per-stage summary and the bottleneck report are written when the run ends.</p>
      ) : null}
      {source ? (
        profile.isPending ? <Loading what={`profile ${source.name}`} /> : profile.isError ? <ErrorState error={profile.error} /> : (
          <>
            <p className="muted">Profile <code>{source.name}</code>: merged call stacks, widths are {profile.data.unit}.</p>
            <FlameGraph root={profile.data.root} unit={profile.data.unit} title={`Profile of ${run.name}`} />
          </>
        )
      ) : fallback ? (
        <>
          <p className="callout" role="note">
            This run has no profiler output, so this flame graph is built from its <strong>stage timings</strong>{" "}
            (wall seconds summed over {timings.data?.length} steps): it shows where step time went, not call stacks.
            Profiled runs (<code>profile.enabled: true</code>, or <code>rlhfkit profile</code>) attach a speedscope
            file that is drawn here instead, with a bottleneck report.
          </p>
          <FlameGraph root={fallback} unit="s" title={`Stage time of ${run.name}`} />
        </>
      ) : timings.isPending ? <Loading what="timings" /> : (
        <Empty title="Nothing to draw yet.">The flame graph appears after the first step (from stage timings) or when a profile is attached.</Empty>
      )}
      {report.data ? <TopOperators p={report.data} /> : null}
      <section aria-labelledby="dl-h">
        <h2 id="dl-h">Downloads</h2>
        {downloads.length === 0 ? (
          <p className="muted">No trace or speedscope file for this run. Profiled runs attach a Chrome/Perfetto trace
            (open in <code>ui.perfetto.dev</code>) and a speedscope file (open in <code>speedscope.app</code>).</p>
        ) : (
          <ul>
            {downloads.map((a) => (
              <li key={a.name}><a href={a.url} download onClick={(e) => downloadWithAuth(e, a.url, a.name)}>{a.name}</a> <span className="muted">({a.kind}, {fmtBytes(a.size_bytes)})</span></li>
            ))}
          </ul>
        )}
      </section>
    </div>
  );
}
