// One keystroke per action, per feedback type. Pure so it is unit-tested without a browser.
import type { LeasedPair } from "../api/client";

export type FeedbackKind = LeasedPair["kind"];
export type Side = "left" | "right";
export type Choice = Side | "tie" | "both_bad";
export type Strength = "slight" | "clear" | "strong";

/** What a demonstration item's keys do; the demonstration editor carries them out. */
export type DemonstrationAction =
  | { kind: "copy"; side: Side }
  | { kind: "blank" }
  | { kind: "edit" }
  | { kind: "submit" };

export type Action =
  | { kind: "choose"; choice: Choice }
  | { kind: "strength"; strength: Strength }
  | { kind: "rationale" }
  | DemonstrationAction
  /** A ranking item's key, carried out by its view (ranking.ts says what each does). */
  | { kind: "rank"; key: string }
  /** A rating item's key, carried out by its view (rating.ts says what each does). */
  | { kind: "rate"; key: string }
  | { kind: "skip" }
  | { kind: "guidelines" }
  | { kind: "help" };

// The same on every item, whatever its kind.
const COMMON: Record<string, Action> = {
  s: { kind: "skip" },
  g: { kind: "guidelines" },
  "?": { kind: "help" },
};

const BINDINGS: Record<FeedbackKind, Record<string, Action>> = {
  pairwise: {
    "1": { kind: "choose", choice: "left" },
    ArrowLeft: { kind: "choose", choice: "left" },
    "2": { kind: "choose", choice: "right" },
    ArrowRight: { kind: "choose", choice: "right" },
    "3": { kind: "choose", choice: "tie" },
    t: { kind: "choose", choice: "tie" },
    "4": { kind: "choose", choice: "both_bad" },
    b: { kind: "choose", choice: "both_bad" },
    q: { kind: "strength", strength: "slight" },
    w: { kind: "strength", strength: "clear" },
    e: { kind: "strength", strength: "strong" },
    r: { kind: "rationale" },
    ...COMMON,
  },
  demonstration: {
    "1": { kind: "copy", side: "left" },
    ArrowLeft: { kind: "copy", side: "left" },
    "2": { kind: "copy", side: "right" },
    ArrowRight: { kind: "copy", side: "right" },
    n: { kind: "blank" },
    Enter: { kind: "edit" },
    e: { kind: "edit" },
    ...COMMON,
  },
  rating: {
    ...Object.fromEntries(
      ["1", "2", "3", "4", "5", "6", "7", "u", "d", "+", "-", "ArrowUp", "ArrowDown", "Backspace"].map(
        (key) => [key, { kind: "rate", key } as Action],
      ),
    ),
    ...COMMON,
  },
  ranking: {
    ...Object.fromEntries(
      ["1", "2", "3", "4", "5", "6", "=", "Backspace", "Enter"].map((key) => [
        key,
        { kind: "rank", key } as Action,
      ]),
    ),
    ...COMMON,
  },
};

/** The keys as the help panel lists them, in order, for the kind of item on screen. */
export const KEY_HELP: Record<FeedbackKind, [string, string][]> = {
  pairwise: [
    ["1 or ←", "left is better"],
    ["2 or →", "right is better"],
    ["3 or T", "tie"],
    ["4 or B", "both bad"],
    ["Q / W / E", "strength: slight / clear / strong"],
    ["S", "skip this pair"],
    ["R", "write a rationale (Esc to leave the box)"],
    ["G", "show or hide the guidelines"],
    ["?", "show or hide these keys"],
  ],
  demonstration: [
    ["1 or ←", "start from the left answer and rewrite it"],
    ["2 or →", "start from the right answer and rewrite it"],
    ["N", "start a blank answer"],
    ["Enter or E", "go to the answer box"],
    ["Ctrl+Enter", "send the answer (also inside the box; ⌘+Enter on a Mac)"],
    ["Esc", "leave the answer box, back to the keys"],
    ["S", "skip this item"],
    ["G", "show or hide the guidelines"],
    ["?", "show or hide these keys"],
  ],
  rating: [
    ["U or ↑ / D or ↓", "thumbs up / down (a thumbs project): the left answer, then the right"],
    ["1 … 7", "a score from 1 (bad) to 7 (excellent) (a 1-7 project): left, then right"],
    ["Backspace", "start the ratings of this item over"],
    ["S", "skip this item"],
    ["G", "show or hide the guidelines"],
    ["?", "show or hide these keys"],
  ],
  ranking: [
    ["1 … 6", "press the answers' numbers from best to worst (or click them in that order)"],
    ["=", "then a number: that answer ties the one placed just before"],
    ["Backspace", "take back the last answer placed"],
    ["Enter", "send the ranking, once every answer is placed"],
    ["drag", "move a placed answer to another place in your order"],
    ["S", "skip this item"],
    ["G", "show or hide the guidelines"],
    ["?", "show or hide these keys"],
  ],
};

export interface KeyInput {
  key: string;
  ctrlKey?: boolean;
  metaKey?: boolean;
  altKey?: boolean;
  /** The event came from a text field, where letters are text, not commands. */
  inTextField?: boolean;
  /** The event came from a button or link, where Enter presses it. */
  onControl?: boolean;
}

export function actionForKey(input: KeyInput, kind: FeedbackKind = "pairwise"): Action | null {
  if (kind === "demonstration" && isSendChord(input)) return { kind: "submit" };
  if (input.ctrlKey || input.metaKey || input.altKey || input.inTextField) return null;
  if (input.key === "Enter" && input.onControl) return null;
  const key = input.key.length === 1 ? input.key.toLowerCase() : input.key;
  return BINDINGS[kind][key] ?? null;
}

/** Ctrl+Enter (Cmd+Enter on a Mac) sends a written answer, from inside its box too. */
function isSendChord(input: KeyInput): boolean {
  return input.key === "Enter" && !!(input.ctrlKey || input.metaKey) && !input.altKey;
}

/** Strength applies only when one side wins; the API refuses it for a tie or both bad. */
export function strengthFor(choice: Choice, strength: Strength): Strength | null {
  return choice === "left" || choice === "right" ? strength : null;
}
