import { render, screen } from "@testing-library/react";
import { api } from "../api/client";
import { parseRoute } from "../router";
import { HistoryPage, goldSummary } from "./History";

vi.mock("../api/client", async (original) => ({
  ...(await original<typeof import("../api/client")>()),
  api: { GET: vi.fn(), POST: vi.fn() },
}));

const history = {
  annotator_id: 2,
  username: "alice",
  judgments: 5,
  gold_judged: 4,
  gold_correct: 3,
  gold_accuracy: 0.75,
  gold_low: 0.3,
  gold_high: 0.954,
  agreement_with_others: 0.5,
  left_bias: 0.5,
  median_seconds: 2.0,
  rounds: [{ round: 1, judgments: 5 }],
  written_answers: 2,
  ratings: 1,
  rankings: 0,
  latest: [
    {
      id: 9,
      created_at: "2026-12-01T10:00:00Z",
      round: 1,
      prompt: "<img src=x onerror=alert(1)> Say hi",
      choice: "left",
      strength: "clear",
      rationale: "shorter",
      time_spent_ms: 2100,
      gold: "wrong",
      other_judgments: 1,
      agrees_with_others: false,
    },
  ],
};

describe("HistoryPage", () => {
  it("routes /app/annotate/N/history to the history page", () => {
    expect(parseRoute("/app/annotate/3/history")).toEqual({ page: "history", projectId: 3 });
    expect(parseRoute("/app/admin/3/pairs/17")).toEqual({
      page: "admin",
      projectId: 3,
      tab: "pairs",
      item: 17,
    });
  });

  it("gives gold accuracy with its count and interval, or says there is none yet", () => {
    expect(goldSummary(history as never)).toBe("75% (3 of 4; 95% interval 30%–95%)");
    expect(goldSummary({ ...history, gold_judged: 0, gold_accuracy: null } as never)).toBe(
      "no gold pairs judged yet",
    );
  });

  it("lists each judgment with what gold and the others said, prompts as plain text", async () => {
    vi.mocked(api.GET).mockResolvedValue({ data: history } as never);
    render(<HistoryPage projectId={1} />);
    expect(await screen.findByTestId("gold-accuracy")).toHaveTextContent("75% (3 of 4");
    expect(screen.getByText("left better, clear")).toBeInTheDocument();
    expect(screen.getByTestId("other-feedback")).toHaveTextContent("2 written answers · 1 rating");
    expect(screen.getByText("✗ missed")).toBeInTheDocument();
    expect(screen.getByText("disagreed (1)")).toBeInTheDocument();
    expect(screen.getByText(/<img src=x/)).toBeInTheDocument();
    expect(document.querySelector("img")).toBeNull();
  });
});
