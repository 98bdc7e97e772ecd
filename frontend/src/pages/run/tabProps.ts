/** What every run-page tab receives: the run as last fetched and its live store. */
import type { RunPublic } from "../../api/client";
import type { LiveStore } from "../../lib/liveStore";

export interface TabProps {
  run: RunPublic;
  store: LiveStore;
  /** The cursor history queries must cover; null until the run has loaded. */
  cursor: number | null;
}
