import { render, screen } from "@testing-library/react";
import { api } from "../api/client";
import { errorBar, OverviewPanel } from "./OverviewPanel";

vi.mock("../api/client", async (original) => ({
  ...(await original<typeof import("../api/client")>()),
  api: { GET: vi.fn(), POST: vi.fn() },
}));

const summary = (reachable: number | null) => [
  {
    number: 2, status: "open", quota: 20, comparisons: 19, complete: 3, judgments: 9,
    percent_agreement: null, krippendorff_alpha: null, reward_accuracy: null,
    policy_win_rate: null, reachable,
  },
];

function answer(rows: unknown) {
  vi.mocked(api.GET).mockImplementation((async (path: string) =>
    ({ data: path.startsWith("/api/web/") ? rows : [] })) as never);
}

describe("OverviewPanel", () => {
  it("tells the admin when the open round cannot reach its quota", async () => {
    answer(summary(13));
    render(<OverviewPanel projectId={1} />);
    const warning = await screen.findByTestId("quota-out-of-reach");
    expect(warning).toHaveTextContent("Round 2 cannot reach its quota: at most 13 of 20 pairs");
  });

  it("says nothing while the quota can be reached", async () => {
    answer(summary(20));
    render(<OverviewPanel projectId={1} />);
    await screen.findByText("open");
    expect(screen.queryByTestId("quota-out-of-reach")).not.toBeInTheDocument();
  });

  it("says why the agreement chart is empty", async () => {
    answer(summary(20));
    render(<OverviewPanel projectId={1} />);
    expect(await screen.findByTestId("agreement-empty")).toHaveTextContent(
      "No pair has two judgments yet",
    );
  });

  it("draws an interval only where both ends are known", () => {
    expect(errorBar(0.75, 0.6, 0.86)).toEqual([0.75 - 0.6, 0.86 - 0.75]);
    expect(errorBar(0.75, null, null)).toBeNull();
  });
});
