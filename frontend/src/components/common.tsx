/** Small presentational pieces: status badge, loading/empty/error states, tabs. */
import { useId, useRef, type ReactNode } from "react";
import { Link } from "react-router-dom";
import { ApiError, type RunStatus } from "../api/client";

export function StatusBadge({ status }: { status: RunStatus | string }) {
  return <span className={`badge status-${status}`} data-status={status}>{status}</span>;
}

export function Loading({ what }: { what: string }) {
  return <div className="state" role="status" aria-live="polite">Loading {what}…</div>;
}

export function Empty({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="state empty">
      <strong>{title}</strong>
      {children ? <div>{children}</div> : null}
    </div>
  );
}

/** An error, with the hint that fits it: the server answered "not found" or refused the request
 * (nothing to do with whether it runs), or it did not answer at all. */
export function ErrorState({ error, retry, what }: { error: unknown; retry?: () => void; what?: string }) {
  const msg = error instanceof Error ? error.message : String(error);
  if (error instanceof ApiError && error.status === 404) {
    return (
      <div className="state error" role="alert">
        <strong>{what ? `No such ${what}.` : "Not found."}</strong> {msg}
        <div className="muted">It may have been deleted, or the link is wrong. <Link to="/">All runs</Link></div>
      </div>
    );
  }
  const answered = error instanceof ApiError && error.status > 0 && error.status < 500;
  return (
    <div className="state error" role="alert">
      <strong>Something went wrong:</strong> {msg}
      {answered ? null : <div className="muted">Check that the server is running (<code>make run</code>) and try again.</div>}
      {retry ? <button type="button" onClick={retry}>Retry</button> : null}
    </div>
  );
}

export interface TabDef {
  id: string;
  label: string;
}

/** WAI-ARIA tabs: arrow keys, Home and End move between tabs. */
export function Tabs({ tabs, active, onChange, children }: {
  tabs: TabDef[];
  active: string;
  onChange: (id: string) => void;
  children: ReactNode;
}) {
  const base = useId();
  const refs = useRef<(HTMLButtonElement | null)[]>([]);
  const idx = Math.max(0, tabs.findIndex((t) => t.id === active));
  const move = (i: number) => {
    const n = (i + tabs.length) % tabs.length;
    onChange(tabs[n]!.id);
    refs.current[n]?.focus();
  };
  return (
    <div className="tabs">
      <div role="tablist" aria-label="Run views" className="tablist">
        {tabs.map((t, i) => (
          <button
            key={t.id}
            ref={(el) => { refs.current[i] = el; }}
            role="tab"
            type="button"
            id={`${base}-tab-${t.id}`}
            aria-selected={t.id === active}
            aria-controls={`${base}-panel`}
            tabIndex={t.id === active ? 0 : -1}
            onClick={() => onChange(t.id)}
            onKeyDown={(e) => {
              if (e.key === "ArrowRight") move(idx + 1);
              else if (e.key === "ArrowLeft") move(idx - 1);
              else if (e.key === "Home") move(0);
              else if (e.key === "End") move(tabs.length - 1);
              else return;
              e.preventDefault();
            }}
          >
            {t.label}
          </button>
        ))}
      </div>
      <div role="tabpanel" id={`${base}-panel`} aria-labelledby={`${base}-tab-${active}`} className="tabpanel">
        {children}
      </div>
    </div>
  );
}
