// A demonstration item: the annotator writes the answer, or rewrites one of the two shown.
import { type RefObject, useCallback, useEffect, useMemo, useRef, useState } from "react";
import type { LeasedPair } from "../api/client";
import { BLANK_DRAFT, copiedFrom, type Draft, holdsWork, typed } from "./draft";
import type { DemonstrationAction, Side } from "./keys";
import { PairwiseAnswers } from "./PairwiseAnswers";
import type { DemonstrationDecision } from "./queue";

/** What would drop a draft that holds the annotator's own writing. */
type DropIntent = Side | "blank" | "skip";

const DROP_WARNING: Record<DropIntent, string> = {
  left: "Your answer is not sent: press 1 again to replace it with the left answer.",
  right: "Your answer is not sent: press 2 again to replace it with the right answer.",
  blank: "Your answer is not sent: press N again to clear it.",
  skip: "Your answer is not sent: press S (or Skip) again to skip this item and drop it.",
};

const PLACEHOLDER =
  "Start from an answer with 1 or 2, or press N and write your own. " +
  "Ctrl+Enter sends; Esc goes back to the keys.";

const NOTHING_TO_SEND = "Nothing to send: start from an answer with 1 or 2, or write one (N).";

export interface DemonstrationDraft {
  draft: Draft;
  /** Why the last key did nothing (an empty answer, a draft it would have dropped). */
  notice: string | null;
  editor: RefObject<HTMLTextAreaElement | null>;
  /** The annotator's own writing is in the box, not sent yet. */
  unsaved: boolean;
  act(action: DemonstrationAction): void;
  type(text: string): void;
  /** True when nothing would be lost, or the annotator asked twice in a row; else warns. */
  mayDrop(intent: DropIntent): boolean;
}

/**
 * The draft of the demonstration item on screen (`item` null for any other kind). `send` gets
 * the answer and returns false where it refused it (too fast); the draft then stays.
 */
export function useDemonstration(
  item: LeasedPair | null,
  send: (decision: DemonstrationDecision) => boolean,
): DemonstrationDraft {
  const [draft, setDraft] = useState<Draft>(BLANK_DRAFT);
  const [notice, setNotice] = useState<string | null>(null);
  const warnedFor = useRef<DropIntent | null>(null);
  const editor = useRef<HTMLTextAreaElement>(null);
  const focusOnRender = useRef(false);
  const unsaved = holdsWork(draft);

  useEffect(() => {
    // Each item starts blank: a draft belongs to the item it was written for.
    setDraft(BLANK_DRAFT);
    setNotice(null);
    warnedFor.current = null;
  }, [item?.assignment_id]);

  useEffect(() => {
    // A copied answer is the start of a rewrite: the caret waits at its end.
    if (!focusOnRender.current) return;
    focusOnRender.current = false;
    focusAtEnd(editor.current);
  }, [draft]);

  useWarnBeforeUnload(unsaved);

  const mayDrop = useCallback(
    (intent: DropIntent): boolean => {
      if (!unsaved || warnedFor.current === intent) {
        warnedFor.current = null;
        return true;
      }
      warnedFor.current = intent;
      setNotice(DROP_WARNING[intent]);
      return false;
    },
    [unsaved],
  );

  const start = useCallback((next: Draft) => {
    setDraft({ ...next }); // a fresh object, so the focus effect runs even for the same text
    setNotice(null);
    focusOnRender.current = true;
  }, []);

  const act = useCallback(
    (action: DemonstrationAction) => {
      if (!item) return;
      switch (action.kind) {
        case "copy":
          if (mayDrop(action.side)) start(copiedFrom(action.side, item[action.side].text));
          break;
        case "blank":
          if (mayDrop("blank")) start(BLANK_DRAFT);
          break;
        case "edit":
          focusAtEnd(editor.current);
          break;
        case "submit":
          if (draft.text.trim() === "") {
            setNotice(NOTHING_TO_SEND);
            break;
          }
          if (send({ kind: "demonstration", text: draft.text, edited_from: draft.editedFrom })) {
            editor.current?.blur(); // the next item starts from the keys, like this one did
          }
          break;
      }
    },
    [item, draft, mayDrop, start, send],
  );

  const type = useCallback((text: string) => {
    setDraft((current) => typed(current, text));
    setNotice(null);
    warnedFor.current = null; // a warning was about the text as it was
  }, []);

  return useMemo(
    () => ({ draft, notice, editor, unsaved, act, type, mayDrop }),
    [draft, notice, unsaved, act, type, mayDrop],
  );
}

function focusAtEnd(box: HTMLTextAreaElement | null): void {
  if (!box) return;
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
}

/** The browser asks before a reload or a closed tab drops an answer being written. */
function useWarnBeforeUnload(active: boolean): void {
  useEffect(() => {
    if (!active) return;
    const warn = (event: BeforeUnloadEvent) => event.preventDefault();
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, [active]);
}

const EDITED_FROM_LABEL: Record<Side, string> = {
  left: "rewriting the left answer",
  right: "rewriting the right answer",
};

export function DemonstrationEditor({
  item,
  demonstration,
  onSkip,
}: {
  item: LeasedPair;
  demonstration: DemonstrationDraft;
  onSkip: () => void;
}) {
  const { draft, notice, editor, act, type } = demonstration;
  const startFrom = (side: Side) => (
    <button type="button" className="secondary" onClick={() => act({ kind: "copy", side })}>
      Start from this <kbd>{side === "left" ? "1" : "2"}</kbd>
    </button>
  );
  return (
    <div className="demonstration">
      <PairwiseAnswers item={item} action={startFrom} />
      <section className="demonstration-editor" aria-label="Answer editor">
        <div className="editor-head">
          <label htmlFor="demonstration-text">
            Your answer <kbd>Enter</kbd>
          </label>
          <span className="edited-from" data-testid="edited-from">
            {draft.editedFrom ? EDITED_FROM_LABEL[draft.editedFrom] : "written anew"}
          </span>
        </div>
        <textarea
          id="demonstration-text"
          ref={editor}
          value={draft.text}
          onChange={(e) => type(e.target.value)}
          rows={14}
          spellCheck
          placeholder={PLACEHOLDER}
        />
        {notice && (
          <p className="editor-notice" role="alert">
            {notice}
          </p>
        )}
        <div className="choices">
          <button type="button" onClick={() => act({ kind: "submit" })}>
            Send answer <kbd>Ctrl+Enter</kbd>
          </button>
          <button type="button" className="secondary" onClick={() => act({ kind: "blank" })}>
            Blank answer <kbd>N</kbd>
          </button>
          <button type="button" className="secondary" onClick={onSkip}>
            Skip <kbd>S</kbd>
          </button>
        </div>
      </section>
    </div>
  );
}
