import { EMPTY_RANKING, rankingKey, ranksOf, shownRanks, type RankingState } from "./ranking";

/** Press keys in order on a ranking of `size`; the state after them, or the ranks sent. */
function press(keys: string[], size: number): RankingState | number[] {
  let state = EMPTY_RANKING;
  for (const key of keys) {
    const step = rankingKey(state, key, size);
    if (step.kind === "send") return step.ranks;
    if (step.kind === "state") state = step.state;
  }
  return state;
}

describe("ranking keys", () => {
  it("ranks answers in the order their numbers are pressed, best first", () => {
    // Answer 3 best, then 1, then 4, then 2: the ranks go by the answers' order on screen.
    expect(press(["3", "1", "4", "2", "Enter"], 4)).toEqual([2, 4, 1, 3]);
  });

  it("ties an answer with the one before it after =", () => {
    expect(press(["2", "=", "3", "1", "Enter"], 3)).toEqual([3, 1, 1]);
    expect(press(["1", "2", "=", "3", "Enter"], 3)).toEqual([1, 2, 2]);
  });

  it("takes back the last placement, or a pending =, with Backspace", () => {
    expect(press(["1", "2", "Backspace", "3", "2", "Enter"], 3)).toEqual([1, 3, 2]);
    expect(press(["1", "=", "Backspace", "2", "3", "Enter"], 3)).toEqual([1, 2, 3]);
  });

  it("sends nothing until every answer is placed, and ignores repeats and other numbers", () => {
    const state = press(["1", "1", "5", "2", "Enter"], 3) as RankingState;
    expect(Array.isArray(state)).toBe(false);
    expect(state.placed.map((p) => p.answer)).toEqual([0, 1]);
    expect(ranksOf(state, 3)).toBeNull();
    expect(shownRanks(state, 3)).toEqual([1, 2, null]);
    expect(rankingKey(state, "Enter", 3)).toMatchObject({ kind: "ignored" });
    expect(rankingKey(EMPTY_RANKING, "=", 3)).toMatchObject({ kind: "ignored" });
  });
});
