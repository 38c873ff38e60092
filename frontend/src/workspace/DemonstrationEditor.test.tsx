import { act, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { FakeSource, demonstrationItem, pair } from "../test/fixtures";
import type { LeasedPair } from "../api/client";
import { Workspace } from "./Workspace";

vi.mock("../api/client", async (original) => ({
  ...(await original<typeof import("../api/client")>()),
  api: { GET: vi.fn(async () => ({ data: undefined })) },
}));

function setup(pool: LeasedPair[] = [demonstrationItem(1), demonstrationItem(2)], minViewMs = 0) {
  const source = new FakeSource(pool);
  render(
    <Workspace
      projectId={1}
      projectName="Demo"
      guidelines=""
      source={source}
      minViewMs={minViewMs}
    />,
  );
  return source;
}

const editor = () => screen.getByRole("textbox", { name: /Your answer/ });
const shown = (id: number) => screen.findByText(`Prompt ${id}`);
const settle = () => act(async () => {});

describe("Workspace on a demonstration item", () => {
  it("sends the left answer as edited after 1 and Ctrl+Enter, and moves on", async () => {
    const user = userEvent.setup();
    const source = setup();
    await shown(1);
    await user.keyboard("1");
    expect(editor()).toHaveFocus();
    expect(editor()).toHaveValue("Left answer 1");
    await user.keyboard(", made kinder{Control>}{Enter}{/Control}");
    await shown(2);
    await settle();
    expect(source.written).toHaveLength(1);
    expect(source.written[0][0]).toBe(1);
    expect(source.written[0][1]).toMatchObject({
      kind: "demonstration",
      text: "Left answer 1, made kinder",
      edited_from: "left",
    });
    expect(editor()).toHaveValue(""); // the next item starts blank
    expect(editor()).not.toHaveFocus();
  });

  it("sends edited_from null when started blank (N) or after emptying the box", async () => {
    const user = userEvent.setup();
    const source = setup();
    await shown(1);
    await user.keyboard("n");
    await user.keyboard("My own answer{Meta>}{Enter}{/Meta}");
    await shown(2);
    await user.keyboard("{ArrowRight}"); // right copied in, then all of it deleted
    await user.clear(editor());
    await user.keyboard("Written anew{Control>}{Enter}{/Control}");
    await screen.findByText("Nothing left to judge");
    await settle();
    expect(source.written.map(([id, v]) => [id, v.text, v.edited_from])).toEqual([
      [1, "My own answer", null],
      [2, "Written anew", null],
    ]);
  });

  it("refuses an empty answer with a message and sends nothing", async () => {
    const user = userEvent.setup();
    const source = setup();
    await shown(1);
    await user.keyboard("{Control>}{Enter}{/Control}");
    expect(screen.getByRole("alert")).toHaveTextContent("Nothing to send");
    await user.keyboard("n   {Control>}{Enter}{/Control}"); // whitespace only
    await settle();
    expect(source.submitted).toHaveLength(0);
    expect(screen.getByText("Prompt 1")).toBeInTheDocument();
    expect(screen.getByRole("alert")).toHaveTextContent("Nothing to send");
  });

  it("types the keys' letters into the box instead of acting on them", async () => {
    const user = userEvent.setup();
    const source = setup();
    await shown(1);
    await user.keyboard("e"); // E goes to the box, like Enter
    expect(editor()).toHaveFocus();
    await user.keyboard("Press 1 or 2,{Enter}s S n N g ? e ← →{ArrowLeft}");
    await settle();
    expect(editor()).toHaveValue("Press 1 or 2,\ns S n N g ? e ← →");
    expect(screen.getByTestId("edited-from")).toHaveTextContent("written anew");
    expect(source.skipped).toEqual([]);
    expect(screen.queryByLabelText("Guidelines")).not.toBeInTheDocument();
    expect(screen.queryByLabelText("Keys")).not.toBeInTheDocument();
    await user.keyboard("{Escape}"); // back to the keys
    expect(editor()).not.toHaveFocus();
    await user.keyboard("?");
    expect(screen.getByLabelText("Keys")).toHaveTextContent("start a blank answer");
  });

  it("never drops the annotator's own writing on one key: it asks for the key twice", async () => {
    const user = userEvent.setup();
    const source = setup();
    await shown(1);
    await user.keyboard("2, with a fix{Escape}");
    await user.keyboard("1");
    expect(screen.getByRole("alert")).toHaveTextContent("press 1 again");
    expect(editor()).toHaveValue("Right answer 1, with a fix");
    await user.keyboard("{Escape}s");
    expect(screen.getByRole("alert")).toHaveTextContent("press S (or Skip) again");
    await settle();
    expect(source.skipped).toEqual([]);
    await user.keyboard("s");
    await shown(2);
    await settle();
    expect(source.skipped).toEqual([1]);
    // A copy left unchanged holds no work of its own: the other side replaces it at once.
    await user.keyboard("1{Escape}2");
    expect(editor()).toHaveValue("Right answer 2");
  });

  it("refuses a send before the item was on screen for the project's minimum", async () => {
    const user = userEvent.setup();
    const source = setup([demonstrationItem(1), demonstrationItem(2)], 300);
    await shown(1);
    await user.keyboard("1{Control>}{Enter}{/Control}");
    expect(await screen.findByText(/Too fast: read both answers first/)).toBeInTheDocument();
    await settle();
    expect(source.submitted).toHaveLength(0);
    expect(editor()).toHaveValue("Left answer 1"); // the draft stays
    await act(() => new Promise((done) => setTimeout(done, 350)));
    await user.keyboard("{Control>}{Enter}{/Control}");
    await shown(2);
    await settle();
    expect(source.written.map(([id, v]) => [id, v.edited_from])).toEqual([[1, "left"]]);
  });

  it("shows hostile markup in an answer as text", async () => {
    const hostile = "<img src=x onerror=\"alert('ran')\"><script>alert('ran')</script>";
    setup([demonstrationItem(1, { left: { text: hostile }, right: { text: hostile } })]);
    await shown(1);
    expect(screen.getAllByText(/onerror/)).toHaveLength(2);
    expect(document.querySelectorAll(".answers img, .answers script, [onerror]")).toHaveLength(0);
    // Copied into the box it is text to edit, still not markup.
    await userEvent.setup().keyboard("1");
    expect(editor()).toHaveValue(hostile);
  });

  it("switches between the pairwise and the demonstration view by the item's kind", async () => {
    const user = userEvent.setup();
    const source = setup([pair(1), demonstrationItem(2), pair(3)]);
    await shown(1);
    expect(screen.queryByRole("textbox", { name: /Your answer/ })).not.toBeInTheDocument();
    await user.keyboard("1"); // a pairwise choice
    await shown(2);
    await user.keyboard("2{Control>}{Enter}{/Control}");
    await shown(3);
    await user.keyboard("?");
    expect(screen.getByLabelText("Keys")).toHaveTextContent("left is better");
    await settle();
    expect(source.submitted.map(([id, v]) => [id, v.kind])).toEqual([
      [1, "pairwise"],
      [2, "demonstration"],
    ]);
    expect(source.judged[0][1]).toMatchObject({ choice: "left" });
    expect(source.written[0][1]).toMatchObject({ text: "Right answer 2", edited_from: "right" });
  });
});
