import { actionForKey, strengthFor } from "./keys";

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

describe("strengthFor", () => {
  it("drops the strength of a tie or both bad", () => {
    expect(strengthFor("left", "strong")).toBe("strong");
    expect(strengthFor("tie", "strong")).toBeNull();
    expect(strengthFor("both_bad", "slight")).toBeNull();
  });
});
