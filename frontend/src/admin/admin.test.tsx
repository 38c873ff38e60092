import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { etaSeconds, percent } from "./format";
import { GateResults, gatesOf } from "./GateResults";
import { seriesFrom } from "./series";
import { PromoteButton, RunProgress, promotionWarnings } from "./TrainingPanel";

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

  it("shows a share's sample size and interval, and when it cannot decide", () => {
    const results = {
      passed: false,
      gates: {
        heldout_accuracy: {
          value: 0.333, threshold: 0.5, passed: false, n: 6, low: 0.097, high: 0.7,
          conclusive: false,
        },
      },
    };
    render(<GateResults results={results} />);
    const line = screen.getByText("heldout accuracy").parentElement;
    expect(line).toHaveTextContent("n=6, 95% CI 0.097–0.700");
    expect(line).toHaveTextContent("not enough data");
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

describe("PromoteButton", () => {
  const version = (fields: Record<string, unknown>) =>
    ({ id: 5, kind: "policy", number: 3, status: "candidate", gate_results: {}, ...fields }) as never;

  it("asks for confirmation that names failed gates, and offers Cancel", async () => {
    const user = userEvent.setup();
    const failed = {
      passed: false,
      gates: { heldout_accuracy: { value: 0.33, threshold: 0.5, passed: false } },
    };
    render(
      <PromoteButton
        version={version({ gate_results: failed })}
        activeNumber={2}
        projectId={1}
        onDone={() => {}}
      />,
    );
    await user.click(screen.getByRole("button", { name: "Promote" }));
    const dialog = screen.getByRole("dialog");
    expect(dialog).toHaveTextContent("Its gates failed (heldout accuracy): it serves anyway.");
    expect(dialog).toHaveTextContent("open the next round");
    await user.click(screen.getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
  });

  it("warns about a version no gate has checked", () => {
    expect(promotionWarnings(version({}), 2)[0]).toMatch(/has not been evaluated/);
  });

  it("offers a rollback only for versions older than the active one", () => {
    const { rerender } = render(
      <PromoteButton version={version({ status: "retired", number: 1 })} activeNumber={2}
        projectId={1} onDone={() => {}} />,
    );
    expect(screen.getByRole("button", { name: "Roll back to this" })).toBeInTheDocument();
    // After a rollback to v1, the newer retired v2 is promoted, not "rolled back to".
    rerender(
      <PromoteButton version={version({ status: "retired", number: 2 })} activeNumber={1}
        projectId={1} onDone={() => {}} />,
    );
    expect(screen.getByRole("button", { name: "Promote" })).toBeInTheDocument();
  });
});
