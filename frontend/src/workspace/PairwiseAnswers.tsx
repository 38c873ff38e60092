// An item's two answers side by side (the sides are random per lease).
import type { ReactNode } from "react";
import { Markdown } from "../components/Markdown";
import type { LeasedPair } from "../api/client";
import type { Side } from "./keys";

export function PairwiseAnswers({
  item,
  action,
}: {
  item: LeasedPair;
  /** Something to do with one answer, in its header in place of its key (a demonstration's
   * "start from this"). */
  action?: (side: Side) => ReactNode;
}) {
  return (
    <div className="answers">
      <section className="answer" aria-label="Left answer" data-side="left">
        <header>
          Left {action ? action("left") : <kbd>1</kbd>}
        </header>
        <Markdown text={item.left.text} />
      </section>
      <section className="answer" aria-label="Right answer" data-side="right">
        <header>
          Right {action ? action("right") : <kbd>2</kbd>}
        </header>
        <Markdown text={item.right.text} />
      </section>
    </div>
  );
}
