import { render, screen } from "@testing-library/react";
import { etaSeconds, percent } from "./format";
import { GateResults, gatesOf } from "./GateResults";
import { seriesFrom } from "./series";
import { RunProgress } from "./TrainingPanel";

describe("GateResults", () => {
  it("renders whatever gates are there, with pass and fail", () => {
    const results = {
      passed: false,
      gates: {
        win_rate: { value: 0.6, threshold: 0.5, passed: true },
        kl: { value: 12.5, threshold: 10, passed: false },
        something_new: { value: 3 },
      },
    };
    render(<GateResults results={results} />);
    expect(screen.getByText("failed")).toBeInTheDocument();
    expect(screen.getByText("win rate").parentElement).toHaveTextContent("0.600 / 0.500 ✓");
    expect(screen.getByText("kl").parentElement).toHaveClass("gate-failed");
    expect(screen.getByText("something new")).toBeInTheDocument();
  });

  it("says not evaluated for an empty dict", () => {
    render(<GateResults results={{}} />);
    expect(screen.getByText("not evaluated")).toBeInTheDocument();
    expect(gatesOf(null).gates).toEqual([]);
  });
});

describe("RunProgress", () => {
  it("shows the step of the total and an ETA at the pace so far", () => {
    const started = new Date(Date.now() - 60_000).toISOString();
    const run = {
      id: 7,
      kind: "dpo",
      status: "running",
      step: 3,
      total_steps: 12,
      progress: 0.25,
      started_at: started,
      created_at: started,
    } as never;
    render(<RunProgress run={run} now={Date.now()} />);
    expect(screen.getByTestId("run-7-steps")).toHaveTextContent("3 / 12");
    expect(screen.getByRole("progressbar")).toHaveAttribute("aria-valuenow", "3");
    expect(screen.getByText(/ETA 3m/)).toBeInTheDocument();
  });
});

describe("helpers", () => {
  it("groups metric points by step into loss and accuracy series", () => {
    const s = seriesFrom([
      { step: 2, split: "train", name: "loss", value: 0.5 },
      { step: 1, split: "train", name: "loss", value: 0.7 },
      { step: 2, split: "eval", name: "accuracy", value: 0.6 },
    ]);
    expect(s.rows.map((r) => r.step)).toEqual([1, 2]);
    expect(s.lossKeys).toEqual(["train loss"]);
    expect(s.accuracyKeys).toEqual(["eval accuracy"]);
  });

  it("formats percents and ETAs", () => {
    expect(percent(0.456)).toBe("46%");
    expect(percent(null)).toBe("–");
    expect(etaSeconds({ step: 0, total_steps: 10, started_at: "2024-01-01T00:00:00Z" }, 0)).toBe(
      null,
    );
  });
});
