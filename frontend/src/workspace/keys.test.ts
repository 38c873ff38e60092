import { KEY_HELP, actionForKey, strengthFor } from "./keys";

describe("actionForKey", () => {
  it("maps the judgment keys", () => {
    expect(actionForKey({ key: "1" })).toEqual({ kind: "choose", choice: "left" });
    expect(actionForKey({ key: "ArrowRight" })).toEqual({ kind: "choose", choice: "right" });
    expect(actionForKey({ key: "T" })).toEqual({ kind: "choose", choice: "tie" });
    expect(actionForKey({ key: "4" })).toEqual({ kind: "choose", choice: "both_bad" });
    expect(actionForKey({ key: "s" })).toEqual({ kind: "skip" });
    expect(actionForKey({ key: "e" })).toEqual({ kind: "strength", strength: "strong" });
    expect(actionForKey({ key: "g" })).toEqual({ kind: "guidelines" });
  });

  it("ignores keys typed into a text field or with a modifier", () => {
    expect(actionForKey({ key: "1", inTextField: true })).toBeNull();
    expect(actionForKey({ key: "r", ctrlKey: true })).toBeNull();
    expect(actionForKey({ key: "x" })).toBeNull();
  });
});

describe("actionForKey on a demonstration item", () => {
  const demo = (input: Parameters<typeof actionForKey>[0]) => actionForKey(input, "demonstration");

  it("maps copy, blank, edit and the shared keys", () => {
    expect(demo({ key: "1" })).toEqual({ kind: "copy", side: "left" });
    expect(demo({ key: "ArrowRight" })).toEqual({ kind: "copy", side: "right" });
    expect(demo({ key: "N" })).toEqual({ kind: "blank" });
    expect(demo({ key: "Enter" })).toEqual({ kind: "edit" });
    expect(demo({ key: "e" })).toEqual({ kind: "edit" });
    expect(demo({ key: "s" })).toEqual({ kind: "skip" });
    expect(demo({ key: "?" })).toEqual({ kind: "help" });
    expect(demo({ key: "3" })).toBeNull(); // no tie, strength or rationale here
    expect(demo({ key: "q" })).toBeNull();
  });

  it("sends with Ctrl+Enter or Cmd+Enter, also from inside the answer box", () => {
    expect(demo({ key: "Enter", ctrlKey: true, inTextField: true })).toEqual({ kind: "submit" });
    expect(demo({ key: "Enter", metaKey: true })).toEqual({ kind: "submit" });
    expect(demo({ key: "Enter", inTextField: true })).toBeNull(); // a new line
    expect(demo({ key: "Enter", ctrlKey: true, altKey: true })).toBeNull();
    expect(actionForKey({ key: "Enter", ctrlKey: true })).toBeNull(); // pairwise: no such key
  });

  it("leaves Enter on a button or link to press it", () => {
    expect(demo({ key: "Enter", onControl: true })).toBeNull();
    expect(demo({ key: "Enter", ctrlKey: true, onControl: true })).toEqual({ kind: "submit" });
  });
});

describe("KEY_HELP", () => {
  it("lists the keys of each kind", () => {
    expect(KEY_HELP.pairwise.map(([, what]) => what)).toContain("tie");
    expect(KEY_HELP.demonstration.map(([, what]) => what)).toContain("start a blank answer");
  });
});

describe("strengthFor", () => {
  it("drops the strength of a tie or both bad", () => {
    expect(strengthFor("left", "strong")).toBe("strong");
    expect(strengthFor("tie", "strong")).toBeNull();
    expect(strengthFor("both_bad", "slight")).toBeNull();
  });
});
