/** New run: a form generated from the config's JSON Schema, starting from a preset or from a
 * suggestion of another run (then the header names it, and the changed fields are listed at the top
 * and marked "(changed)" against that run's config). The browser checks each field against the
 * config's JSON Schema (types, bounds, enums, the "x-divides" rules) as the user types and before
 * submit; the server validates again (422 names each bad field, shown inline); on success we go
 * straight to the run page. The common knobs come first; every other field sits under "Advanced",
 * which opens by itself when a field inside has an error or is marked "(changed)". */
import { useEffect, useMemo, useRef, useState } from "react";
import { useLocation, useNavigate, useSearchParams } from "react-router-dom";
import { ApiError } from "../api/client";
import type { components } from "../client/schema";
import { useConfigSchema, useCreateRun, usePresets } from "../api/queries";
import { ErrorState, Loading } from "../components/common";
import { SchemaForm, type ConfigValue } from "../components/SchemaForm";
import { advancedReasons, splitForm } from "../lib/formLayout";
import { buildForm, diffOverrides, errorsByField, getAt, validateForm } from "../lib/schemaForm";
import { fmtValue, type LaunchSource, originOf } from "../lib/suggestions";
import { toYaml } from "../lib/yaml";

export default function NewRunPage() {
  const schema = useConfigSchema();
  const presets = usePresets();
  const create = useCreateRun();
  const navigate = useNavigate();
  const location = useLocation();
  const [params, setParams] = useSearchParams();
  const state = location.state as { config?: ConfigValue; base?: ConfigValue; source?: LaunchSource } | null;
  const fromState = state?.config;
  const presetName = params.get("preset") ?? (fromState ? "" : "smoke");
  const preset = presets.data?.find((p) => p.name === presetName);
  // launched from a suggestion (and no preset picked since): compare with the source run's config
  const source = state?.source && state.base && !presetName ? state.source : undefined;
  const base = (source ? state?.base : preset?.config ?? undefined) as ConfigValue | undefined;
  const [value, setValue] = useState<ConfigValue | null>(fromState ?? null);
  const [errors, setErrors] = useState<Record<string, string[]>>({}); // the server's, from the last submit
  const [blocked, setBlocked] = useState(false); // a submit was stopped by the browser's own checks
  // React passes a nested <details>' toggle on to its ancestors' onToggle: each handler checks its target
  const [advancedOpen, setAdvancedOpen] = useState(false);
  const [attempts, setAttempts] = useState(0); // submits tried: each one shows again what Advanced holds
  const summary = useRef<HTMLDivElement>(null);

  useEffect(() => {
    if (base && (!fromState || presetName)) setValue(base);
  }, [presetName, preset]);

  const form = useMemo(() => (schema.data ? buildForm(schema.data) : null), [schema.data]);
  const clientErrors = useMemo(() => (form && value ? validateForm(form, value) : {}), [form, value]);
  const shown = mergeErrors(clientErrors, errors);
  const changedKeys = value && base ? Object.keys(diffOverrides(base, value)) : [];
  const changes = changedKeys.length;
  const layout = useMemo(() => (form ? splitForm(form) : null), [form]);
  // what Advanced holds that must not stay hidden: an error, or a field marked "(changed)"
  const reasons = layout ? advancedReasons(layout.advanced, shown, changedKeys) : [];
  const reasonsKey = reasons.join(" ");
  useEffect(() => {
    if (reasonsKey) setAdvancedOpen(true);
  }, [reasonsKey, attempts]);

  if (schema.isPending || presets.isPending) return <Loading what="config schema and presets" />;
  if (schema.isError) return <ErrorState error={schema.error} retry={() => void schema.refetch()} />;
  if (presets.isError) return <ErrorState error={presets.error} retry={() => void presets.refetch()} />;
  if (!form || !layout || !value) return <Loading what="preset" />;

  const focusFirstInvalid = () => requestAnimationFrame(() => {
    const first = document.querySelector<HTMLElement>("[aria-invalid=true]");
    (first ?? summary.current)?.focus();
  });
  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    setErrors({});
    setAttempts((n) => n + 1);
    if (Object.keys(clientErrors).length) { // nothing the server would accept: say so here, send nothing
      setBlocked(true);
      focusFirstInvalid();
      return;
    }
    setBlocked(false);
    // the form holds JSON values (SchemaForm builds them from the config's JSON Schema)
    create.mutate({ config: value as components["schemas"]["JsonObject"], origin: source ? originOf(source) : null }, {
      onSuccess: (run) => navigate(`/runs/${run.id}`),
      onError: (err) => {
        const byField = err instanceof ApiError && err.problems.length ? errorsByField(err.problems) : { "": [err.message] };
        setErrors(byField);
        focusFirstInvalid();
      },
    });
  };
  const fieldErrors = Object.entries(errors).filter(([k]) => k !== "");

  return (
    <section aria-labelledby="new-h">
      <div className="page-head">
        <div>
          <h1 id="new-h">New run</h1>
          {source ? (
            <p className="launch-source" data-testid="launch-source">
              From suggestion {source.index} of run <a href={`/runs/${source.runId}`}>{source.runName}</a>
            </p>
          ) : null}
        </div>
        <label>Start from preset{" "}
          <select value={presetName} onChange={(e) => { setErrors({}); setParams({ preset: e.target.value }, { replace: true }); }}>
            {fromState ? <option value="">(suggested config)</option> : null}
            {presets.data.map((p) => <option key={p.name} value={p.name} disabled={!p.config}>{p.name}</option>)}
          </select>
        </label>
      </div>
      <form onSubmit={submit} noValidate aria-describedby="new-help">
        <p id="new-help" className="muted">
          Every field comes from the run config's schema; its help text says what it does. The server checks the
          whole config when you submit.{" "}
          {changes ? `${changes} field(s) changed from ${source ? `run ${source.runName}` : "the preset"}.`
            : source ? `Unchanged from run ${source.runName}.` : "Unchanged preset."}
        </p>
        {changes && base ? (
          <div className="changed-fields" aria-label="Changed fields">
            <strong>Changed{source ? ` from run ${source.runName}` : " from the preset"}:</strong>
            <ul>
              {changedKeys.map((k) => (
                <li key={k} data-changed={k}>
                  <code>{k}</code>: {fmtValue(getAt(base, k.split(".")))} → {fmtValue(getAt(value, k.split(".")))}{" "}
                  <span className="changed-mark">(changed)</span>
                </li>
              ))}
            </ul>
          </div>
        ) : null}
        {blocked && Object.keys(clientErrors).length ? (
          <div className="state error" role="alert" data-testid="client-errors">
            <strong>Fix {Object.keys(clientErrors).length} field(s) before starting the run:</strong>
            <ul>{Object.entries(clientErrors).map(([k, msgs]) => <li key={k}><code>{k}</code>: {msgs.join("; ")}</li>)}</ul>
          </div>
        ) : null}
        {Object.keys(errors).length ? (
          <div className="state error" role="alert" tabIndex={-1} ref={summary}>
            <strong>The server refused this config.</strong>
            <ul>
              {(errors[""] ?? []).map((m) => <li key={m}>{m}</li>)}
              {fieldErrors.map(([k, msgs]) => <li key={k}><code>{k}</code>: {msgs.join("; ")}</li>)}
            </ul>
          </div>
        ) : null}
        <div className="common-fields" data-testid="common-fields">
          <SchemaForm form={layout.common} value={value} base={base} errors={shown} onChange={setValue} />
        </div>
        <details className="advanced" data-testid="advanced" open={advancedOpen}
                 onToggle={(e) => { if (e.target === e.currentTarget) setAdvancedOpen(e.currentTarget.open); }}>
          <summary>
            Advanced <span className="muted">(every other field of the config)</span>
            {reasons.some((k) => shown[k]?.length) ? <span className="error-dot" aria-label="has errors"> ●</span> : null}
          </summary>
          <SchemaForm form={layout.advanced} value={value} base={base} errors={shown} onChange={setValue} />
        </details>
        <details className="yaml-preview">
          <summary>Config as YAML</summary>
          <pre>{toYaml(value)}</pre>
        </details>
        <div className="form-actions">
          <button type="submit" className="primary" disabled={create.isPending}>
            {create.isPending ? "Submitting…" : "Start run"}
          </button>
          <button type="button" onClick={() => { setErrors({}); if (base) setValue(base); }}>Reset to preset</button>
        </div>
      </form>
    </section>
  );
}

/** The browser's and the server's messages per field, each once. */
function mergeErrors(a: Record<string, string[]>, b: Record<string, string[]>): Record<string, string[]> {
  const out: Record<string, string[]> = { ...a };
  for (const [k, msgs] of Object.entries(b)) out[k] = [...new Set([...(out[k] ?? []), ...msgs])];
  return out;
}
