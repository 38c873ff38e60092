import { act, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { FakeSource, pair } from "../test/fixtures";
import { Workspace } from "./Workspace";

vi.mock("../api/client", async (original) => ({
  ...(await original<typeof import("../api/client")>()),
  api: { GET: vi.fn(async () => ({ data: undefined })) },
}));

function setup(pool = [pair(1), pair(2), pair(3)], minViewMs = 0) {
  const source = new FakeSource(pool);
  render(
    <Workspace
      projectId={1}
      projectName="Demo"
      guidelines="Be **kind**."
      source={source}
      minViewMs={minViewMs}
    />,
  );
  return source;
}

const pause = (ms: number) => act(() => new Promise((done) => setTimeout(done, ms)));

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
    expect(source.judged.map(([id, v]) => [id, v.choice, v.strength])).toEqual([
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

  it("ignores, and says so, a key pressed before the pair was on screen long enough", async () => {
    const user = userEvent.setup();
    const source = setup([pair(1), pair(2)], 300);
    await screen.findByText("Left answer 1");
    await user.keyboard("1");
    await user.keyboard("1");
    expect(await screen.findByText(/Too fast: read both answers first/)).toBeInTheDocument();
    expect(screen.getByText("Left answer 1")).toBeInTheDocument();
    expect(source.submitted).toHaveLength(0);
    await pause(350);
    await user.keyboard("2");
    expect(await screen.findByText("Left answer 2")).toBeInTheDocument();
    await user.keyboard("1"); // the next pair has its own clock
    await act(async () => {});
    expect(source.judged.map(([id, v]) => [id, v.choice])).toEqual([[1, "right"]]);
  });

  it("starts each pair at the default strength, also after a skip", async () => {
    const user = userEvent.setup();
    const source = setup();
    await screen.findByText("Left answer 1");
    await user.keyboard("q"); // slight, then skipped
    await user.keyboard("s");
    await screen.findByText("Left answer 2");
    await user.keyboard("{ArrowRight}");
    await screen.findByText("Left answer 3");
    await act(async () => {});
    expect(source.judged.map(([id, v]) => [id, v.choice, v.strength])).toEqual([
      [2, "right", "clear"],
    ]);
  });

  it("closes the guidelines and the keys with Esc", async () => {
    const user = userEvent.setup();
    setup();
    await screen.findByText("Left answer 1");
    await user.keyboard("g");
    await user.keyboard("?");
    expect(screen.getByLabelText("Guidelines")).toBeInTheDocument();
    expect(screen.getByLabelText("Keys")).toBeInTheDocument();
    await user.keyboard("{Escape}");
    expect(screen.queryByLabelText("Guidelines")).not.toBeInTheDocument();
    expect(screen.queryByLabelText("Keys")).not.toBeInTheDocument();
  });

  it("says once why no pair came, and offers to try again", async () => {
    const user = userEvent.setup();
    class PausedSource extends FakeSource {
      paused = true;
      async next() {
        if (this.paused) throw new Error("You are paused in this project; ask an admin.");
        return super.next();
      }
    }
    const source = new PausedSource([pair(1)]);
    render(<Workspace projectId={1} projectName="Demo" guidelines="" source={source} />);
    expect(await screen.findByRole("alert")).toHaveTextContent("You are paused in this project");
    expect(screen.getAllByRole("alert")).toHaveLength(1);
    expect(screen.queryByText(/Reload the page/)).not.toBeInTheDocument();
    source.paused = false;
    await user.click(screen.getByRole("button", { name: "Try again" }));
    expect(await screen.findByText("Left answer 1")).toBeInTheDocument();
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();
  });
});
