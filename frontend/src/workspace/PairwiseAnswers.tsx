// What a pairwise item shows: its two answers side by side (the sides are random per lease).
import { Markdown } from "../components/Markdown";
import type { LeasedPair } from "../api/client";

export function PairwiseAnswers({ item }: { item: LeasedPair }) {
  return (
    <div className="answers">
      <section className="answer" aria-label="Left answer" data-side="left">
        <header>
          Left <kbd>1</kbd>
        </header>
        <Markdown text={item.left.text} />
      </section>
      <section className="answer" aria-label="Right answer" data-side="right">
        <header>
          Right <kbd>2</kbd>
        </header>
        <Markdown text={item.right.text} />
      </section>
    </div>
  );
}
