/** Joining a tab's server rows with the rows its live stream brought since. */

/** Server rows plus live rows for later steps. */
export function mergeRows<T extends { step: number | null }>(server: readonly T[], live: readonly T[]): T[] {
  const last = server.length ? Math.max(...server.map((r) => r.step ?? -1)) : -1;
  return [...server, ...live.filter((r) => (r.step ?? -1) > last)];
}
