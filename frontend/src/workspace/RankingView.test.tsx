import { act, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { FakeSource, pair } from "../test/fixtures";
import type { RankingDecision } from "./queue";
import { Workspace } from "./Workspace";

vi.mock("../api/client", async (original) => ({
  ...(await original<typeof import("../api/client")>()),
  api: { GET: vi.fn(async () => ({ data: undefined })) },
}));

function rankingItem(id: number, texts: string[]) {
  return pair(id, { kind: "ranking", answers: texts.map((text) => ({ text })) });
}

function setup() {
  const source = new FakeSource([
    rankingItem(1, ["Fair", "Best", "Worst"]),
    rankingItem(2, ["One", "Two", "Three", "Four"]),
  ]);
  render(<Workspace projectId={1} projectName="Demo" guidelines="" source={source} />);
  return source;
}

const ranked = (source: FakeSource) =>
  source.submitted.map(([id, v]) => [id, (v as RankingDecision & { kind: string }).kind, v]);

describe("Ranking in the workspace", () => {
  it("ranks with the number keys and Enter, and sends one rank per answer shown", async () => {
    const user = userEvent.setup();
    const source = setup();
    expect(await screen.findByText("Best")).toBeInTheDocument();
    await user.keyboard("2");
    await user.keyboard("1");
    expect(screen.getByLabelText("Rank 1")).toBeInTheDocument();
    await user.keyboard("{Enter}"); // not all placed: nothing sent
    await user.keyboard("3");
    await user.keyboard("{Enter}");
    expect(await screen.findByText("Four")).toBeInTheDocument();
    await act(async () => {});
    expect(ranked(source)).toEqual([
      [1, "ranking", expect.objectContaining({ kind: "ranking", ranks: [2, 1, 3] })],
    ]);
  });

  it("ties with = and takes back with Backspace", async () => {
    const user = userEvent.setup();
    const source = setup();
    await screen.findByText("Best");
    await user.keyboard("3");
    await user.keyboard("{Backspace}");
    await user.keyboard("2");
    await user.keyboard("=");
    await user.keyboard("1");
    await user.keyboard("3");
    await user.keyboard("{Enter}");
    await screen.findByText("Four");
    await act(async () => {});
    const sent = source.submitted[0][1] as RankingDecision & { submission_key: string };
    expect(sent.ranks).toEqual([1, 1, 3]);
    expect(sent.submission_key).toMatch(/-/);
  });

  it("lists the ranking keys in the help", async () => {
    const user = userEvent.setup();
    setup();
    await screen.findByText("Best");
    await user.keyboard("?");
    expect(screen.getByText(/ties the one placed just before/)).toBeInTheDocument();
  });
});
