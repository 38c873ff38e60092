// Ranking k answers with the keys, as a pure state machine so it is unit-tested without a
// browser. The answers' numbers are pressed from best to worst: each press places that answer
// at the next rank; "=" before a number ties it with the answer placed just before; Backspace
// takes back the last placement; Enter sends once every answer is placed.

/** One answer placed: its position on screen (0-based) and whether it ties the one before. */
export interface Placement {
  answer: number;
  tied: boolean;
}

export interface RankingState {
  placed: Placement[];
  /** "=" was pressed: the next answer placed ties the last one. */
  tieNext: boolean;
}

export const EMPTY_RANKING: RankingState = { placed: [], tieNext: false };

export type RankingStep =
  | { kind: "state"; state: RankingState }
  | { kind: "send"; ranks: number[] }
  | { kind: "ignored"; why: string };

/** What a key does to a ranking of `size` answers. */
export function rankingKey(state: RankingState, key: string, size: number): RankingStep {
  if (key === "Backspace") {
    if (state.tieNext) return { kind: "state", state: { ...state, tieNext: false } };
    return { kind: "state", state: { placed: state.placed.slice(0, -1), tieNext: false } };
  }
  if (key === "=") {
    if (state.placed.length === 0) return { kind: "ignored", why: "Place an answer first" };
    if (state.placed.length === size) return { kind: "ignored", why: "Every answer is placed" };
    return { kind: "state", state: { ...state, tieNext: true } };
  }
  if (key === "Enter") {
    const ranks = ranksOf(state, size);
    return ranks ? { kind: "send", ranks } : { kind: "ignored", why: "Place every answer first" };
  }
  const answer = Number(key) - 1;
  if (!/^[1-9]$/.test(key) || answer >= size) return { kind: "ignored", why: "" };
  if (state.placed.some((p) => p.answer === answer)) {
    return { kind: "ignored", why: `Answer ${answer + 1} is placed already` };
  }
  return place(state, answer, state.tieNext);
}

/** Place an answer at the next rank (or tied with the last one), by a key or a drop. */
export function place(state: RankingState, answer: number, tied = false): RankingStep {
  const rest = state.placed.filter((p) => p.answer !== answer);
  const placed = [...rest, { answer, tied: tied && rest.length > 0 }];
  return { kind: "state", state: { placed, tieNext: false } };
}

/** Each placement's rank: one more than the answers above it, or the rank it ties (1, 1, 3). */
export function placementRanks(state: RankingState): number[] {
  const ranks: number[] = [];
  state.placed.forEach((p, i) => ranks.push(p.tied && i > 0 ? ranks[i - 1] : i + 1));
  return ranks;
}

/** The ranks to send, one per answer in the order shown; null until every answer is placed. */
export function ranksOf(state: RankingState, size: number): number[] | null {
  if (state.placed.length !== size) return null;
  const byPlacement = placementRanks(state);
  const ranks = new Array<number>(size).fill(0);
  state.placed.forEach((p, i) => (ranks[p.answer] = byPlacement[i]));
  return ranks;
}

/** The rank shown beside each answer on screen, or null where it is not placed yet. */
export function shownRanks(state: RankingState, size: number): (number | null)[] {
  const byPlacement = placementRanks(state);
  const ranks = new Array<number | null>(size).fill(null);
  state.placed.forEach((p, i) => (ranks[p.answer] = byPlacement[i]));
  return ranks;
}
