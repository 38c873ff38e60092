import { BLANK_DRAFT, copiedFrom, holdsWork, typed } from "./draft";

describe("a demonstration draft", () => {
  it("keeps the side last copied in while its text is edited", () => {
    const draft = typed(copiedFrom("right", "An answer"), "An answer, fixed");
    expect(draft).toMatchObject({ text: "An answer, fixed", editedFrom: "right" });
  });

  it("forgets the side once the box is emptied, so what follows is written anew", () => {
    const emptied = typed(copiedFrom("left", "An answer"), "  ");
    expect(emptied.editedFrom).toBeNull();
    expect(typed(emptied, "Mine").editedFrom).toBeNull();
  });

  it("holds work only when the text is the annotator's own", () => {
    expect(holdsWork(BLANK_DRAFT)).toBe(false);
    expect(holdsWork(copiedFrom("left", "An answer"))).toBe(false);
    expect(holdsWork(typed(copiedFrom("left", "An answer"), "An answer!"))).toBe(true);
    expect(holdsWork(typed(BLANK_DRAFT, "Mine"))).toBe(true);
  });
});
