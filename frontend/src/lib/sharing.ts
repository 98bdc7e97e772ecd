/** The run page's note on runs that executed beside this one (embedded mode, `embedded_workers` > 1):
 * its step times and tokens/s were measured on a shared device. */
import type { RunPublic } from "../api/client";

export type SharedDevice = NonNullable<RunPublic["shared_device"]>;

const DEVICE: Record<string, string> = { cpu: "this CPU", cuda: "this GPU" };

export function sharedDeviceNote(s: SharedDevice, lastStep: number | null, active = true): string {
  const n = s.run_ids.length;
  const who = `${n} other run${n === 1 ? "" : "s"}`;
  const to = s.to_step ?? lastStep;
  const open = s.to_step === null && active; // a finished run's record closes when its process has exited
  const steps = to === null || to === undefined || to <= s.from_step
    ? `step ${s.from_step}${open ? " onwards" : ""}`
    : `steps ${s.from_step}–${to}${open ? " (still running)" : ""}`;
  return `${who} shared ${DEVICE[s.device] ?? "this machine"} during ${steps}; timings are not comparable with a run that had it alone.`;
}
