import { describe, expect, it } from "vitest";
import { namedMetrics, otherMetrics } from "./metrics";

describe("version metrics", () => {
  it("puts a reward model's held-out accuracy first, with the pairs it rests on", () => {
    const metrics = {
      train_loss: 0.61,
      eval_accuracy: 0.7,
      heldout_accuracy: 0.75,
      heldout_pairs: 40,
      seconds: 95,
      train_grad_norm: 1.2,
    };
    const named = namedMetrics("reward", metrics);
    expect(named.map((m) => m.label)).toEqual([
      "Held-out accuracy",
      "Accuracy on its eval slice",
      "Final training loss",
      "Training time",
    ]);
    expect(named[0].detail).toBe("on 40 human pairs no training saw");
    expect(otherMetrics("reward", metrics)).toEqual([
      ["heldout_pairs", 40],
      ["train_grad_norm", 1.2],
    ]);
  });

  it("names a policy's implicit-reward figures and leaves gate figures to the gates", () => {
    const metrics = { "train_rewards/accuracy": 0.9, gate_win_rate: 0.6, seconds: 30, note: "x" };
    expect(namedMetrics("policy", metrics).map((m) => m.key)).toEqual([
      "train_rewards/accuracy",
      "seconds",
    ]);
    expect(otherMetrics("policy", metrics)).toEqual([]);
  });
});

describe("charts", () => {
  it("keeps a series' colour across charts and ticks distinct on a narrow range", async () => {
    const { chartColors, colorFor, quarterTicks, tickDecimals } = await import("./Charts");
    expect(colorFor("train loss")).toBe(colorFor("train accuracy"));
    expect(colorFor("eval loss")).not.toBe(colorFor("train loss"));
    expect(colorFor("win_rate")).toBe(colorFor("win_rate"));
    // "agreement" and "alpha" hash to one colour; on one chart they still differ.
    const [agreement, alpha] = chartColors(["agreement", "alpha"]);
    expect(agreement).toBe(colorFor("agreement"));
    expect(alpha).not.toBe(agreement);
    expect(quarterTicks([-0.25, 1])).toEqual([-0.25, 0, 0.25, 0.5, 0.75, 1]);
    const rows = [0.6931, 0.6925, 0.6918, 0.6912].map((v, step) => ({ step, "train loss": v }));
    const decimals = tickDecimals(rows, ["train loss"]);
    const ticks = [0.6912, 0.6917, 0.6922, 0.6927].map((v) => v.toFixed(decimals));
    expect(new Set(ticks).size).toBe(4);
  });
});
