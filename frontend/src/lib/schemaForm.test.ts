import { describe, expect, it } from "vitest";
import schema from "./__fixtures__/run_config_schema.json";
import {
  allFields, buildForm, describeBounds, diffOverrides, errorsByField, formatValue, getAt, parseInput, setAt,
  validateForm,
  type JsonSchema,
} from "./schemaForm";

const form = buildForm(schema as JsonSchema);
const field = (key: string) => allFields(form).find((f) => f.key === key)!;

describe("buildForm from RunConfig's JSON Schema", () => {
  it("makes a section per nested model and a field per leaf", () => {
    expect(form.sections.map((s) => s.key)).toEqual(["model", "generation", "reward", "ppo", "train", "monitor", "profile"]);
    expect(form.fields.map((f) => f.key)).toEqual(["name", "seed", "tags", "algorithm"]);
  });

  it("classifies types, enums, nullables and bounds", () => {
    expect(field("ppo.batch_size")).toMatchObject({ kind: "integer", min: 1, max: 65536, nullable: false });
    expect(field("ppo.learning_rate")).toMatchObject({ kind: "number", exclusiveMin: 0, max: 1 });
    expect(field("model.size")).toMatchObject({ kind: "enum", options: ["tiny", "small", "medium", "large", "custom"] });
    expect(field("model.pretrained")).toMatchObject({ kind: "string", nullable: true });
    expect(field("model.n_layer")).toMatchObject({ kind: "integer", nullable: true, min: 1 });
    expect(field("tags").kind).toBe("string-list");
    expect(field("monitor.thresholds").kind).toBe("number-map");
    expect(field("generation.stop_at_eos").kind).toBe("boolean");
    expect(field("ppo.batch_size").description).toMatch(/Prompts/);
    expect(describeBounds(field("ppo.learning_rate"))).toBe("> 0, ≤ 1");
    expect(field("ppo.kl_estimator").label).toBe("KL estimator");
    expect(form.sections.find((x) => x.key === "ppo")!.label).toBe("PPO");
  });
});

describe("values", () => {
  it("parses input by kind and leaves invalid text for the server to name", () => {
    expect(parseInput(field("ppo.batch_size"), "16")).toBe(16);
    expect(parseInput(field("ppo.batch_size"), "1.5")).toBe("1.5");
    expect(parseInput(field("ppo.learning_rate"), "3e-4")).toBeCloseTo(3e-4);
    expect(parseInput(field("model.n_layer"), "")).toBeNull();
    expect(parseInput(field("tags"), "a, b,,c")).toEqual(["a", "b", "c"]);
    expect(parseInput(field("monitor.thresholds"), '{"kl_high": 3}')).toEqual({ kl_high: 3 });
    expect(formatValue(field("tags"), ["a", "b"])).toBe("a, b");
    expect(formatValue(field("model.n_layer"), null)).toBe("");
  });

  it("sets nested values without mutating", () => {
    const a = { ppo: { batch_size: 32, lam: 0.95 } };
    const b = setAt(a, ["ppo", "batch_size"], 16);
    expect(a.ppo.batch_size).toBe(32);
    expect(getAt(b, ["ppo", "batch_size"])).toBe(16);
    expect(getAt(b, ["ppo", "lam"])).toBe(0.95);
  });

  it("lists changed leaves as dotted overrides", () => {
    expect(diffOverrides({ a: { b: 1, c: [1] }, d: 2 }, { a: { b: 2, c: [1] }, d: 2 })).toEqual({ "a.b": 2 });
  });
});

describe("errorsByField", () => {
  it("maps the server's 422 locations to form fields", () => {
    const e = errorsByField([
      { loc: ["body", "config", "ppo", "batch_size"], msg: "Input should be greater than or equal to 1" },
      { loc: ["body", "overrides", "ppo.lam"], msg: "bad" },
      { loc: ["body", "config", "ppo"], msg: "mini_batch_size must divide batch_size" },
      { loc: ["body"], msg: "malformed" },
    ]);
    expect(e["ppo.batch_size"]).toEqual(["Input should be greater than or equal to 1"]);
    expect(e["ppo.lam"]).toEqual(["bad"]);
    expect(e["ppo"]).toEqual(["mini_batch_size must divide batch_size"]);
    expect(e[""]).toEqual(["malformed"]);
  });
});

describe("validateForm", () => {
  const schema = {
    type: "object",
    properties: { ppo: { $ref: "#/$defs/PPO" }, name: { type: "string" } },
    $defs: {
      PPO: {
        type: "object",
        "x-divides": [["mini_batch_size", "batch_size"]],
        properties: {
          batch_size: { type: "integer", minimum: 1, maximum: 65536 },
          mini_batch_size: { type: "integer", minimum: 1 },
          lr: { type: "number", exclusiveMinimum: 0 },
          optimizer: { enum: ["adamw", "adamw_8bit"] },
        },
      },
    },
  };
  const form = buildForm(schema);
  const ok = { name: "x", ppo: { batch_size: 32, mini_batch_size: 8, lr: 1e-4, optimizer: "adamw" } };

  it("accepts a valid config", () => {
    expect(validateForm(form, ok)).toEqual({});
  });

  it("checks types, bounds and enums from the schema, worded as the server words them", () => {
    const bad = { ...ok, ppo: { batch_size: 0, mini_batch_size: "abc", lr: 0, optimizer: "sgd" } };
    expect(validateForm(form, bad)).toEqual({
      "ppo.batch_size": ["Input should be greater than or equal to 1"],
      "ppo.mini_batch_size": ["Input should be a valid integer"],
      "ppo.lr": ["Input should be greater than 0"],
      "ppo.optimizer": ["Input should be 'adamw', 'adamw_8bit'"],
    });
  });

  it("puts an x-divides rule on the dividing field, and only between valid values", () => {
    expect(validateForm(form, { ...ok, ppo: { ...ok.ppo, mini_batch_size: 5 } })).toEqual({
      "ppo.mini_batch_size": ["ppo.mini_batch_size (5) must divide ppo.batch_size (32)"],
    });
    expect(Object.keys(validateForm(form, { ...ok, ppo: { ...ok.ppo, batch_size: 0, mini_batch_size: 5 } })))
      .toEqual(["ppo.batch_size"]);
  });

  it("maps the server's cross-field error, now located at the field, to that field", () => {
    const e = errorsByField([{ loc: ["body", "config", "ppo", "mini_batch_size"],
                               msg: "Value error, ppo.mini_batch_size (5) must divide ppo.batch_size (32)" }]);
    expect(Object.keys(e)).toEqual(["ppo.mini_batch_size"]);
  });
});
