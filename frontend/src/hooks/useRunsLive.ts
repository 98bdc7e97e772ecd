/** Keeps every cached runs list and run current from `WS /api/live` (run status changes). After a
 * reconnect the lists are refetched, since that stream has no cursor to resume from. */
import { useQueryClient } from "@tanstack/react-query";
import { wsUrl, type RunPublic, type RunsPublic } from "../api/client";
import { keys } from "../api/queries";
import { useLiveSocket } from "./useLiveSocket";

interface StatusMessage {
  type: "run_status";
  run: RunPublic;
  seq?: number;
}

export function useRunsLive(): void {
  const qc = useQueryClient();
  useLiveSocket<StatusMessage>({
    url: () => wsUrl("/api/live"),
    streamKey: "live",
    cursor: null,
    onMessage: (msg) => {
      if (msg.type !== "run_status" || !msg.run) return;
      const run = msg.run;
      qc.setQueryData(keys.run(run.id), (old: RunPublic | undefined) => ({ ...old, ...run }));
      let known = false;
      qc.setQueriesData<RunsPublic>({ queryKey: ["runs"] }, (old) => {
        if (!old) return old;
        const i = old.data.findIndex((r) => r.id === run.id);
        if (i < 0) return old;
        known = true;
        const data = old.data.slice();
        data[i] = run;
        return { ...old, data };
      });
      if (!known) void qc.invalidateQueries({ queryKey: ["runs"] }); // a new run: refetch lists (filters, order)
    },
    onReconnect: () => void qc.invalidateQueries({ queryKey: ["runs"] }),
  });
}
