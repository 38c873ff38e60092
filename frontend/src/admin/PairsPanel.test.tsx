import { render, screen } from "@testing-library/react";
import { api } from "../api/client";
import { PairsPanel } from "./PairsPanel";

vi.mock("../api/client", async (original) => ({
  ...(await original<typeof import("../api/client")>()),
  api: { GET: vi.fn(), POST: vi.fn() },
}));

const detail = {
  id: 17,
  round: 2,
  status: "complete",
  required_annotations: 2,
  priority: 0,
  gold_outcome: null,
  selection: { strategy: "uncertainty", scores: [0.1, 0.2] },
  created_at: "2026-12-01T10:00:00Z",
  completed_at: "2026-12-01T10:05:00Z",
  prompt: { id: 3, text: "Name a colour.", messages: null },
  kind: "pairwise",
  listed_answers: [],
  demonstrations: [],
  ratings: [],
  rankings: [],
  answers: [
    { side: "a", response_id: 5, text: "Blue.", source: "policy", model_version: 4, model_version_number: 1, external_model: "" },
    {
      side: "b",
      response_id: 6,
      text: "<script>window.hacked = 1</script>Red.",
      source: "policy",
      model_version: 4,
      model_version_number: 1,
      external_model: "",
    },
  ],
  judgments: [
    {
      id: 1, annotator_id: 2, username: "alice", source: "human", outcome: "a", choice: "left",
      a_on_left: true, strength: "clear", rationale: "blue <b>is</b> a colour", time_spent_ms: 3000,
      created_at: "2026-12-01T10:01:00Z",
    },
    {
      id: 2, annotator_id: 3, username: "bob", source: "human", outcome: "b", choice: "left",
      a_on_left: false, strength: null, rationale: "", time_spent_ms: 1500,
      created_at: "2026-12-01T10:02:00Z",
    },
  ],
  resolution: { label: "disagreement", agreement: 0, counts: { a: 1, b: 1 } },
  posterior_a: 0.62,
};

describe("PairsPanel", () => {
  beforeEach(() => vi.mocked(api.GET).mockReset());

  it("shows one pair with each judgment in a/b terms and as the annotator saw it", async () => {
    vi.mocked(api.GET).mockResolvedValue({ data: detail } as never);
    render(<PairsPanel projectId={1} pairId={17} />);
    expect(await screen.findByTestId("pair-resolution")).toHaveTextContent(
      "majority: no majority",
    );
    expect(screen.getByTestId("pair-resolution")).toHaveTextContent("P(a better): 0.62");
    expect(screen.getByLabelText("Answer a")).toHaveTextContent("written by policy v1");
    const rows = screen.getAllByRole("row").slice(1);
    expect(rows[0]).toHaveTextContent("alice");
    expect(rows[0]).toHaveTextContent("a better");
    expect(rows[0]).toHaveTextContent("left (a on the left)");
    expect(rows[1]).toHaveTextContent("b better");
    expect(rows[1]).toHaveTextContent("left (a on the right)");
    // Untrusted text stays text: the rationale's markup and the answer's script do not run.
    expect(screen.getByText("blue <b>is</b> a colour")).toBeInTheDocument();
    expect(document.querySelector("script")).toBeNull();
    expect((window as { hacked?: number }).hacked).toBeUndefined();
  });

  it("lists pairs with a link to each, filtered by round", async () => {
    vi.mocked(api.GET).mockResolvedValue({
      data: {
        count: 1,
        next: null,
        previous: null,
        results: [
          {
            id: 17, prompt: 3, round: 2, response_a: 5, response_b: 6, required_annotations: 2,
            judgment_count: 2, status: "complete", priority: 0, gold_outcome: "a",
            selection: { strategy: "random" }, created_at: "2026-12-01T10:00:00Z",
            completed_at: null,
          },
        ],
      },
    } as never);
    render(<PairsPanel projectId={1} pairId={null} />);
    expect(await screen.findByRole("link", { name: "#17" })).toHaveAttribute(
      "href",
      "/app/admin/1/pairs/17",
    );
    expect(screen.getByText("a better")).toBeInTheDocument();
    expect(screen.getByText("random")).toBeInTheDocument();
  });

  it("shows a written answer with what it was rewritten from, and no empty judgments table", async () => {
    vi.mocked(api.GET).mockResolvedValue({
      data: {
        ...detail,
        kind: "demonstration",
        judgments: [],
        demonstrations: [
          {
            id: 4, username: "carol", text: "Green, <b>surely</b>.", edited_from: 5,
            review_status: "pending", created_at: "2026-12-01T10:03:00Z",
          },
        ],
      },
    } as never);
    render(<PairsPanel projectId={1} pairId={17} />);
    const written = await screen.findByRole("region", { name: "Written answers" });
    expect(written).toHaveTextContent("carol");
    expect(written).toHaveTextContent("rewritten from answer a");
    expect(written).toHaveTextContent("Green, <b>surely</b>.");
    expect(screen.queryByRole("table", { name: "Judgments" })).toBeNull();
    expect(screen.queryByText("Nobody has judged this pair yet.")).toBeNull();
  });
});
