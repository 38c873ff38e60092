import { act, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import type { LeasedPair } from "../api/client";
import { FakeSource, pair } from "../test/fixtures";
import { ratingKey, EMPTY_RATING } from "./rating";
import { Workspace } from "./Workspace";

vi.mock("../api/client", async (original) => ({
  ...(await original<typeof import("../api/client")>()),
  api: { GET: vi.fn(async () => ({ data: undefined })) },
}));

const ratingItem = (id: number, scale: "thumbs" | "likert7" = "thumbs"): LeasedPair =>
  pair(id, { kind: "rating", rating_scale: scale });

function setup(pool: LeasedPair[]) {
  const source = new FakeSource(pool);
  render(
    <Workspace projectId={1} projectName="Demo" guidelines="" source={source} minViewMs={0} />,
  );
  return source;
}

const settle = () => act(async () => {});

describe("Workspace on a rating item", () => {
  it("rates left then right with thumbs and sends both scores by side", async () => {
    const user = userEvent.setup();
    const source = setup([ratingItem(1), ratingItem(2)]);
    await screen.findByText("Prompt 1");
    await user.keyboard("u");
    expect(source.submitted).toHaveLength(0); // one side rated: nothing sent yet
    await user.keyboard("d");
    await screen.findByText("Prompt 2");
    await settle();
    expect(source.submitted[0][1]).toMatchObject({ kind: "rating", left_score: 7, right_score: 1 });
  });

  it("takes 1 to 7 on a seven-point item, and Backspace starts the item over", async () => {
    const user = userEvent.setup();
    const source = setup([ratingItem(1, "likert7"), ratingItem(2, "likert7")]);
    await screen.findByText("Prompt 1");
    await user.keyboard("2{Backspace}6");
    await user.keyboard("u"); // not a score on this scale: ignored, with a hint
    expect(await screen.findByText(/Rate with a number from 1 to 7/)).toBeInTheDocument();
    await user.keyboard("3");
    await screen.findByText("Prompt 2");
    await settle();
    expect(source.submitted[0][1]).toMatchObject({ left_score: 6, right_score: 3 });
  });

  it("refuses a digit on a thumbs item", () => {
    const step = ratingKey(EMPTY_RATING, "5", "thumbs");
    expect(step.kind).toBe("ignored");
  });
});
