// A demonstration's answer while it is written. Pure so its rules are unit-tested.
import type { Side } from "./keys";

export interface Draft {
  text: string;
  /** The side last copied in; null for an answer started blank, and once the box is emptied. */
  editedFrom: Side | null;
  /** The text as it was copied in ("" when started blank): while unchanged it holds no work. */
  startedFrom: string;
}

export const BLANK_DRAFT: Draft = { text: "", editedFrom: null, startedFrom: "" };

export function copiedFrom(side: Side, text: string): Draft {
  return { text, editedFrom: side, startedFrom: text };
}

export function typed(draft: Draft, text: string): Draft {
  // Emptied: whatever comes next is written anew, not edited from the side copied in before.
  if (text.trim() === "") return { text, editedFrom: null, startedFrom: "" };
  return { ...draft, text };
}

/** The annotator's own writing is in the box: dropping it must never happen by accident. */
export function holdsWork(draft: Draft): boolean {
  return draft.text.trim() !== "" && draft.text !== draft.startedFrom;
}
