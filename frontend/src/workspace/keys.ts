// One keystroke per judgment. Pure so it is unit-tested without a browser.
export type Choice = "left" | "right" | "tie" | "both_bad";
export type Strength = "slight" | "clear" | "strong";

export type Action =
  | { kind: "choose"; choice: Choice }
  | { kind: "strength"; strength: Strength }
  | { kind: "skip" }
  | { kind: "rationale" }
  | { kind: "guidelines" }
  | { kind: "help" };

const BINDINGS: Record<string, Action> = {
  "1": { kind: "choose", choice: "left" },
  ArrowLeft: { kind: "choose", choice: "left" },
  "2": { kind: "choose", choice: "right" },
  ArrowRight: { kind: "choose", choice: "right" },
  "3": { kind: "choose", choice: "tie" },
  t: { kind: "choose", choice: "tie" },
  "4": { kind: "choose", choice: "both_bad" },
  b: { kind: "choose", choice: "both_bad" },
  s: { kind: "skip" },
  q: { kind: "strength", strength: "slight" },
  w: { kind: "strength", strength: "clear" },
  e: { kind: "strength", strength: "strong" },
  r: { kind: "rationale" },
  g: { kind: "guidelines" },
  "?": { kind: "help" },
};

/** The keys as the help panel lists them, in order. */
export const KEY_HELP: [string, string][] = [
  ["1 or ←", "left is better"],
  ["2 or →", "right is better"],
  ["3 or T", "tie"],
  ["4 or B", "both bad"],
  ["Q / W / E", "strength: slight / clear / strong"],
  ["S", "skip this pair"],
  ["R", "write a rationale (Esc to leave the box)"],
  ["G", "show or hide the guidelines"],
  ["?", "show or hide these keys"],
];

export interface KeyInput {
  key: string;
  ctrlKey?: boolean;
  metaKey?: boolean;
  altKey?: boolean;
  /** The event came from a text field, where letters are text, not commands. */
  inTextField?: boolean;
}

export function actionForKey(input: KeyInput): Action | null {
  if (input.ctrlKey || input.metaKey || input.altKey || input.inTextField) return null;
  const key = input.key.length === 1 ? input.key.toLowerCase() : input.key;
  return BINDINGS[key] ?? null;
}

/** Strength applies only when one side wins; the API refuses it for a tie or both bad. */
export function strengthFor(choice: Choice, strength: Strength): Strength | null {
  return choice === "left" || choice === "right" ? strength : null;
}
