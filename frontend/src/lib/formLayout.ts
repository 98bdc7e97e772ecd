/** The New run form's layout: the knobs most runs change come first, every other field of the
 * schema goes under a collapsed "Advanced" section that must open whenever it holds an error or a
 * field marked "(changed)" (nothing the user has to see may sit in a closed section). Pure
 * functions over the form tree of lib/schemaForm, so the grouping is tested without a browser. */
import { allFields, type FieldSpec, type SectionSpec } from "./schemaForm";

/** The common knobs, in the order they are shown, with the label each reads under out of its
 * section ("Size" alone would not say which size). The preset picker sits above the form. */
export const COMMON_FIELDS: readonly { key: string; label: string }[] = [
  { key: "name", label: "Name" },
  { key: "model.size", label: "Model size" },
  { key: "reward.kind", label: "Reward" },
  { key: "ppo.batch_size", label: "Batch size" },
  { key: "ppo.learning_rate", label: "Learning rate" },
  { key: "ppo.kl_coef", label: "KL coefficient" },
  { key: "train.steps_per_epoch", label: "Steps per epoch" },
];

export interface FormLayout {
  /** The common knobs as one flat section, in COMMON_FIELDS order (keys the schema lacks are skipped). */
  common: SectionSpec;
  /** The rest of the form, sections that kept no field dropped. */
  advanced: SectionSpec;
}

export function splitForm(form: SectionSpec, common: readonly { key: string; label: string }[] = COMMON_FIELDS): FormLayout {
  const byKey = new Map(allFields(form).map((f) => [f.key, f]));
  const fields = common.flatMap(({ key, label }): FieldSpec[] => {
    const f = byKey.get(key);
    return f ? [{ ...f, label }] : [];
  });
  const taken = new Set(fields.map((f) => f.key));
  const rest = (s: SectionSpec): SectionSpec => ({
    ...s,
    fields: s.fields.filter((f) => !taken.has(f.key)),
    sections: s.sections.map(rest).filter((c) => c.fields.length > 0 || c.sections.length > 0),
  });
  return { common: { ...form, key: "", label: "Common", fields, sections: [], divides: [] }, advanced: rest(form) };
}

function sectionKeys(s: SectionSpec): string[] {
  return s.sections.flatMap((c) => [c.key, ...sectionKeys(c)]);
}

/** The keys that hold Advanced open: those of `errors` (the browser's and the server's) and of
 * `changed` (the fields marked "(changed)") that fall inside it — one of its fields, a part of one
 * (`monitor.thresholds.kl_max`), or one of its sections (a cross-field error on `ppo`). Sorted;
 * empty when Advanced may stay closed. */
export function advancedReasons(advanced: SectionSpec, errors: Record<string, string[]>,
                                changed: readonly string[]): string[] {
  const fields = allFields(advanced).map((f) => f.key);
  const sections = new Set(sectionKeys(advanced));
  const inside = (k: string) => sections.has(k) || fields.some((f) => k === f || k.startsWith(`${f}.`));
  const keys = new Set([...Object.keys(errors).filter((k) => (errors[k] ?? []).length > 0), ...changed]);
  return [...keys].filter(inside).sort();
}
