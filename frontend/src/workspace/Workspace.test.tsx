import { act, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { FakeSource, pair } from "../test/fixtures";
import { Workspace } from "./Workspace";

vi.mock("../api/client", async (original) => ({
  ...(await original<typeof import("../api/client")>()),
  api: { GET: vi.fn(async () => ({ data: undefined })) },
}));

function setup(pool = [pair(1), pair(2), pair(3)]) {
  const source = new FakeSource(pool);
  render(<Workspace projectId={1} projectName="Demo" guidelines="Be **kind**." source={source} />);
  return source;
}

describe("Workspace", () => {
  it("judges with single keys and shows the prefetched pair at once", async () => {
    const user = userEvent.setup();
    const source = setup();
    expect(await screen.findByText("Left answer 1")).toBeInTheDocument();
    await user.keyboard("e"); // strong
    await user.keyboard("1");
    expect(await screen.findByText("Left answer 2")).toBeInTheDocument();
    await user.keyboard("3");
    expect(await screen.findByText("Left answer 3")).toBeInTheDocument();
    await act(async () => {});
    expect(source.submitted.map(([id, v]) => [id, v.choice, v.strength])).toEqual([
      [1, "left", "strong"],
      [2, "tie", null],
    ]);
  });

  it("sends the rationale typed after R, without the letters triggering keys", async () => {
    const user = userEvent.setup();
    const source = setup();
    await screen.findByText("Left answer 1");
    await user.keyboard("r");
    await user.keyboard("tie 1 2 because both");
    await user.keyboard("{Escape}");
    await user.keyboard("2");
    await screen.findByText("Left answer 2");
    await act(async () => {});
    expect(source.submitted).toHaveLength(1);
    expect(source.submitted[0][1]).toMatchObject({
      choice: "right",
      rationale: "tie 1 2 because both",
    });
  });

  it("toggles the guidelines with G and says when nothing is left", async () => {
    const user = userEvent.setup();
    setup([pair(1)]);
    await screen.findByText("Left answer 1");
    await user.keyboard("g");
    expect(screen.getByLabelText("Guidelines")).toHaveTextContent("Be kind.");
    await user.keyboard("s");
    expect(await screen.findByText("Nothing left to judge")).toBeInTheDocument();
  });

  it("warns when the lease on the pair on screen has expired", async () => {
    setup([pair(1, { expires_at: new Date(Date.now() - 1000).toISOString() })]);
    await screen.findByText("Left answer 1");
    expect(screen.getByRole("alert")).toHaveTextContent("Your lease on this pair has expired");
  });
});
