/** Live state of one run page: a LiveStore fed by the run's WebSocket, resumed from the `last_seq`
 * the page saw when it first loaded the run (HTTP history is fetched after that snapshot, so the
 * two overlap instead of leaving a hole; merging drops the overlap). */
import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useMemo, useState, useSyncExternalStore } from "react";
import { isTerminalType, wsUrl, type LiveEvent, type RunPublic } from "../api/client";
import { isActive, keys } from "../api/queries";
import { LiveStore } from "../lib/liveStore";
import type { SocketStatus } from "../lib/liveSocket";
import { useLiveSocket } from "./useLiveSocket";

export interface RunLive {
  store: LiveStore;
  /** The cursor history queries must cover; null until the run has loaded. */
  cursor: number | null;
  status: SocketStatus;
}

export function useRunLive(run: RunPublic | undefined, runId: string): RunLive {
  const qc = useQueryClient();
  const store = useMemo(() => new LiveStore(), [runId]);
  const [cursor, setCursor] = useState<number | null>(null);
  const [live, setLive] = useState(false);

  useEffect(() => {
    setCursor(null);
    setLive(false);
  }, [runId]);
  useEffect(() => {
    if (run && run.id === runId && cursor === null) {
      setCursor(run.last_seq);
      setLive(isActive(run));
    }
  }, [run, runId, cursor]);

  const status = useLiveSocket<LiveEvent>({
    url: live && cursor !== null ? (c) => wsUrl(`/api/runs/${encodeURIComponent(runId)}/live?cursor=${c ?? -1}`) : null,
    streamKey: `run:${runId}:${live}`,
    cursor,
    onMessage: (ev) => {
      store.apply(ev);
      if (ev.type === "run_started" || isTerminalType(ev.type)) {
        // status, summary and the per-run resources changed: refetch them
        void qc.invalidateQueries({ queryKey: keys.run(runId) });
        void qc.invalidateQueries({ queryKey: ["runs"] });
      } else if (ev.type === "eval" || ev.type === "artifact" || ev.type === "alert") {
        void qc.invalidateQueries({ queryKey: [...keys.run(runId), ev.type === "eval" ? "samples" : `${ev.type}s`] });
      }
    },
    isFinal: (ev) => isTerminalType(ev.type),
  });
  return { store, cursor, status };
}

/** Re-render when any of `keys` gets a live point (and only then). */
export function useLiveVersion(store: LiveStore, storeKeys: readonly string[]): number {
  const joined = storeKeys.join("\u0000");
  const subscribe = useMemo(
    () => (fn: () => void) => store.subscribe(joined.split("\u0000"), fn),
    [store, joined],
  );
  return useSyncExternalStore(subscribe, () => store.version(storeKeys));
}
