import { describe, expect, it } from "vitest";
import schema from "./__fixtures__/run_config_schema.json";
import { advancedReasons, COMMON_FIELDS, splitForm } from "./formLayout";
import { allFields, buildForm, type JsonSchema } from "./schemaForm";

const form = buildForm(schema as JsonSchema);
const { common, advanced } = splitForm(form);

describe("splitForm", () => {
  it("puts the common knobs first, in order, with labels that read out of their section", () => {
    expect(common.fields.map((f) => f.key)).toEqual([
      "name", "model.size", "reward.kind", "ppo.batch_size", "ppo.learning_rate", "ppo.kl_coef", "train.steps_per_epoch",
    ]);
    expect(common.fields.map((f) => f.label)).toEqual(COMMON_FIELDS.map((c) => c.label));
    expect(common.sections).toEqual([]);
    // the rest of each field's spec (kind, bounds, path) is the schema's
    expect(common.fields[3]).toMatchObject({ path: ["ppo", "batch_size"], kind: "integer", min: 1 });
  });

  it("keeps every other field under Advanced, each exactly once", () => {
    const all = allFields(form).map((f) => f.key).sort();
    const shown = [...common.fields, ...allFields(advanced)].map((f) => f.key).sort();
    expect(shown).toEqual(all);
    const inAdvanced = allFields(advanced).map((f) => f.key);
    expect(inAdvanced).toContain("ppo.mini_batch_size");
    expect(inAdvanced).toContain("generation.max_new_tokens");
    expect(inAdvanced).not.toContain("ppo.batch_size");
    expect(advanced.fields.map((f) => f.key)).toEqual(["seed", "tags", "algorithm"]);
    // sections keep their order and their cross-field rules (the browser checks them on the whole form)
    expect(advanced.sections.map((s) => s.key)).toEqual(["model", "generation", "reward", "ppo", "train", "monitor", "profile"]);
    expect(advanced.sections.find((s) => s.key === "ppo")!.divides).toContainEqual(["mini_batch_size", "batch_size"]);
  });

  it("skips a common key the schema does not have", () => {
    const split = splitForm(form, [{ key: "name", label: "Name" }, { key: "nope.missing", label: "Missing" }]);
    expect(split.common.fields.map((f) => f.key)).toEqual(["name"]);
  });

  it("drops a section whose every field became common", () => {
    const only = splitForm(form, allFields(form).filter((f) => f.path[0] === "reward").map((f) => ({ key: f.key, label: f.label })));
    expect(only.advanced.sections.map((s) => s.key)).not.toContain("reward");
  });
});

describe("advancedReasons", () => {
  it("is empty when errors and changes are all on common fields", () => {
    expect(advancedReasons(advanced, { "ppo.batch_size": ["Input should be greater than or equal to 1"], "": ["x"] },
                           ["name", "ppo.learning_rate"])).toEqual([]);
  });

  it("names an error on an Advanced field, a section's own error, and a part of a field", () => {
    expect(advancedReasons(advanced, { "ppo.mini_batch_size": ["must divide"] }, [])).toEqual(["ppo.mini_batch_size"]);
    expect(advancedReasons(advanced, { ppo: ["cross-field"] }, [])).toEqual(["ppo"]);
    expect(advancedReasons(advanced, {}, ["monitor.thresholds.kl_max"])).toEqual(["monitor.thresholds.kl_max"]);
    expect(advancedReasons(advanced, { "ppo.mini_batch_size": [] }, [])).toEqual([]); // no message, no reason
  });

  it("names the fields marked (changed) inside Advanced, once each, sorted", () => {
    expect(advancedReasons(advanced, { "generation.max_new_tokens": ["too long"] },
                           ["name", "generation.max_new_tokens", "ppo.grad_accum_steps"]))
      .toEqual(["generation.max_new_tokens", "ppo.grad_accum_steps"]);
  });
});
