import { act, fireEvent, render, screen } from "@testing-library/react";
import { useState } from "react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup } from "@testing-library/react";
import schema from "../lib/__fixtures__/run_config_schema.json";
import { buildForm, type JsonSchema } from "../lib/schemaForm";
import { SchemaForm, type ConfigValue } from "./SchemaForm";

const form = buildForm(schema as JsonSchema);
const preset: ConfigValue = {
  name: "smoke", seed: 0, tags: ["smoke"],
  model: { size: "tiny", pretrained: null, max_length: 64, warm_start: true },
  ppo: { batch_size: 32, mini_batch_size: 16, learning_rate: 3e-4, kl_estimator: "k1" },
  train: {}, generation: {}, reward: {}, monitor: { thresholds: {} },
};

function Harness({ errors = {}, onValue }: { errors?: Record<string, string[]>; onValue?: (v: ConfigValue) => void }) {
  const [value, setValue] = useState<ConfigValue>(preset);
  return <SchemaForm form={form} value={value} base={preset} errors={errors}
                     onChange={(v) => { setValue(v); onValue?.(v); }} />;
}

afterEach(cleanup);

describe("SchemaForm", () => {
  it("renders a labelled input per schema field with the preset's values and help text", () => {
    render(<Harness />);
    const batch = screen.getByLabelText("Batch size") as HTMLInputElement;
    expect(batch.value).toBe("32");
    expect(batch.getAttribute("aria-describedby")).toBeTruthy();
    expect(screen.getByText(/Prompts per step \(each brings generation.samples_per_prompt responses\)/)).toBeTruthy();
    expect((screen.getByLabelText("Size") as HTMLSelectElement).value).toBe("tiny");
    expect((screen.getByLabelText("Warm start") as HTMLInputElement).checked).toBe(true);
    expect(screen.getByText("PPO")).toBeTruthy();
  });

  it("updates the nested config with typed values and marks changed fields", () => {
    const seen = vi.fn();
    render(<Harness onValue={seen} />);
    fireEvent.change(screen.getByLabelText("Batch size"), { target: { value: "16" } });
    const last = seen.mock.calls.at(-1)![0] as { ppo: Record<string, unknown> };
    expect(last.ppo.batch_size).toBe(16);
    expect(last.ppo.mini_batch_size).toBe(16); // siblings untouched
    expect(screen.getByText("(changed)")).toBeTruthy();
    fireEvent.change(screen.getByLabelText("Size"), { target: { value: "small" } });
    expect((seen.mock.calls.at(-1)![0] as { model: { size: string } }).model.size).toBe("small");
    fireEvent.click(screen.getByLabelText("Warm start"));
    expect((seen.mock.calls.at(-1)![0] as { model: { warm_start: boolean } }).model.warm_start).toBe(false);
  });

  it("keeps half-typed numbers as typed", () => {
    render(<Harness />);
    const lr = screen.getByLabelText("Learning rate") as HTMLInputElement;
    act(() => { fireEvent.change(lr, { target: { value: "3e-" } }); });
    expect(lr.value).toBe("3e-");
    act(() => { fireEvent.change(lr, { target: { value: "1." } }); });
    expect(lr.value).toBe("1.");
  });

  it("shows the server's error on its field and marks it invalid", () => {
    render(<Harness errors={{ "ppo.batch_size": ["Input should be greater than or equal to 1"], ppo: ["must divide"] }} />);
    const batch = screen.getByLabelText("Batch size");
    expect(batch.getAttribute("aria-invalid")).toBe("true");
    const errId = batch.getAttribute("aria-describedby")!.split(" ").at(-1)!;
    expect(document.getElementById(errId)!.textContent).toBe("Input should be greater than or equal to 1");
    expect(screen.getByText("must divide")).toBeTruthy(); // section-level (model validator) error
  });
});
