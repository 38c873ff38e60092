// A rating item's keys, pure so they are unit-tested without a browser. The left answer is
// rated first, then the right one; the second rating sends both.
export type RatingScale = "thumbs" | "likert7";
export const THUMBS_DOWN = 1;
export const THUMBS_UP = 7;

export interface RatingState {
  left: number | null;
  right: number | null;
}

export const EMPTY_RATING: RatingState = { left: null, right: null };

export type RatingStep =
  | { kind: "state"; state: RatingState }
  | { kind: "send"; left: number; right: number }
  | { kind: "ignored"; why: string };

/** The score a key gives on this scale, or null when it gives none. */
export function scoreForKey(key: string, scale: RatingScale): number | null {
  if (scale === "thumbs") {
    if (["u", "ArrowUp", "+"].includes(key)) return THUMBS_UP;
    if (["d", "ArrowDown", "-"].includes(key)) return THUMBS_DOWN;
    return null;
  }
  return /^[1-7]$/.test(key) ? Number(key) : null;
}

/** The score for the side still to rate (left first); the second one sends. */
export function rate(state: RatingState, score: number): RatingStep {
  if (state.left === null) return { kind: "state", state: { ...state, left: score } };
  return { kind: "send", left: state.left, right: score };
}

export function ratingKey(state: RatingState, key: string, scale: RatingScale): RatingStep {
  if (key === "Backspace") {
    if (state.left === null) return { kind: "ignored", why: "" };
    return { kind: "state", state: EMPTY_RATING };
  }
  const score = scoreForKey(key, scale);
  if (score === null) {
    const keys = scale === "thumbs" ? "U (up) or D (down)" : "a number from 1 to 7";
    return { kind: "ignored", why: `Rate with ${keys}.` };
  }
  return rate(state, score);
}
