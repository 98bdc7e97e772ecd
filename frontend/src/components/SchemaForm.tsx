/** A config form generated from a JSON Schema (see lib/schemaForm): one labelled input per field,
 * help text from the schema's descriptions, bounds shown, and the server's errors inline. */
import { useEffect, useId, useState } from "react";
import {
  describeBounds, formatValue, getAt, parseInput, setAt, type FieldSpec, type SectionSpec,
} from "../lib/schemaForm";

export type ConfigValue = Record<string, unknown>;

interface Props {
  form: SectionSpec;
  value: ConfigValue;
  base?: ConfigValue;
  errors: Record<string, string[]>;
  onChange: (v: ConfigValue) => void;
}

export function SchemaForm({ form, value, base, errors, onChange }: Props) {
  return (
    <div className="schema-form">
      <div className="fields">
        {form.fields.map((f) => (
          <Field key={f.key} f={f} value={getAt(value, f.path)} base={base ? getAt(base, f.path) : undefined}
                 errors={errors[f.key]} onChange={(v) => onChange(setAt(value, f.path, v))} />
        ))}
      </div>
      {form.sections.map((s) => (
        <Section key={s.key} s={s} value={value} base={base} errors={errors} onChange={onChange} />
      ))}
    </div>
  );
}

function Section({ s, value, base, errors, onChange }: Omit<Props, "form"> & { s: SectionSpec }) {
  const own = errors[s.key];
  const anyError = Object.keys(errors).some((k) => k === s.key || k.startsWith(`${s.key}.`));
  const [open, setOpen] = useState(true);
  useEffect(() => {
    if (anyError) setOpen(true);
  }, [anyError]);
  return (
    <details className="section" open={open} onToggle={(e) => { if (e.target === e.currentTarget) setOpen(e.currentTarget.open); }} data-section={s.key}>
      <summary>
        {s.label}
        {anyError ? <span className="error-dot" aria-label="has errors"> ●</span> : null}
      </summary>
      {own ? <p className="field-error" role="alert">{own.join("; ")}</p> : null}
      <div className="fields">
        {s.fields.map((f) => (
          <Field key={f.key} f={f} value={getAt(value, f.path)} base={base ? getAt(base, f.path) : undefined}
                 errors={errors[f.key]} onChange={(v) => onChange(setAt(value, f.path, v))} />
        ))}
      </div>
      {s.sections.map((c) => (
        <Section key={c.key} s={c} value={value} base={base} errors={errors} onChange={onChange} />
      ))}
    </details>
  );
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function Field({ f, value, base, errors, onChange }: {
  f: FieldSpec;
  value: unknown;
  base: unknown;
  errors?: string[];
  onChange: (v: unknown) => void;
}) {
  const id = useId();
  const helpId = `${id}-help`;
  const errId = `${id}-err`;
  // the text being typed ("1.", "3e-") lives here until it parses; external changes overwrite it
  const [text, setText] = useState(() => formatValue(f, value));
  useEffect(() => {
    if (!same(parseInput(f, text), value)) setText(formatValue(f, value));
  }, [value]);
  const changed = base !== undefined && !same(base, value);
  const bounds = describeBounds(f);
  const describedBy = [helpId, errors ? errId : ""].filter(Boolean).join(" ");
  const common = {
    id,
    name: f.key,
    "aria-describedby": describedBy,
    "aria-invalid": errors ? true : undefined,
    "data-field": f.key,
  };

  let input: React.ReactNode;
  if (f.kind === "boolean") {
    input = <input type="checkbox" {...common} checked={value === true} onChange={(e) => onChange(e.target.checked)} />;
  } else if (f.kind === "enum") {
    input = (
      <select {...common} value={value === null || value === undefined ? "" : String(value)}
              onChange={(e) => onChange(e.target.value === "" && f.nullable ? null : parseInput(f, e.target.value))}>
        {f.nullable ? <option value="">(none)</option> : null}
        {f.options.map((o) => <option key={String(o)} value={String(o)}>{String(o)}</option>)}
      </select>
    );
  } else {
    input = (
      <input
        type="text"
        inputMode={f.kind === "integer" ? "numeric" : f.kind === "number" ? "decimal" : undefined}
        spellCheck={false}
        placeholder={f.nullable ? "(none)" : f.kind === "number-map" ? '{"rule": 1.0}' : undefined}
        {...common}
        value={text}
        onChange={(e) => {
          setText(e.target.value);
          onChange(parseInput(f, e.target.value));
        }}
      />
    );
  }
  return (
    <div className={`field${errors ? " has-error" : ""}${changed ? " changed" : ""}`}>
      <label htmlFor={id}>
        {f.label}
        {changed ? <span className="changed-mark" title={`was: ${JSON.stringify(base)}`}> (changed)</span> : null}
      </label>
      {input}
      <small id={helpId} className="help">
        {f.description}
        {bounds ? ` (${bounds})` : ""}
      </small>
      {errors ? <div id={errId} className="field-error" role="alert">{errors.join("; ")}</div> : null}
    </div>
  );
}
