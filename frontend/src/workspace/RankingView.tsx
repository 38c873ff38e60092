// A ranking item: k answers in a grid, labelled by position only; the annotator orders them
// from best to worst with the number keys (see ranking.ts), by clicking them in that order, or
// by dragging a placed answer to another place in the order.
import { useCallback, useEffect, useState } from "react";
import type { LeasedPair } from "../api/client";
import { Markdown } from "../components/Markdown";
import type { RankingDecision } from "./queue";
import {
  EMPTY_RANKING,
  place,
  placementRanks,
  rankingKey,
  ranksOf,
  shownRanks,
  type RankingState,
  type RankingStep,
} from "./ranking";

export interface RankingDraft {
  state: RankingState;
  size: number;
  /** Why the last key did nothing (an answer placed twice, Enter before the end). */
  notice: string | null;
  /** A key that ranks: a number, "=", Backspace or Enter. */
  act(key: string): void;
  /** Click: place this answer next. */
  placeNext(answer: number): void;
  /** Drag: move a placed answer to another place in the order (0 = best). */
  move(answer: number, to: number): void;
  reset(): void;
}

/** The ranking of the item on screen (`item` null for any other kind). `send` returns false
 * where it refused the ranking (too fast); the ranking then stays. */
export function useRanking(
  item: LeasedPair | null,
  send: (decision: RankingDecision) => boolean,
): RankingDraft {
  const [state, setState] = useState<RankingState>(EMPTY_RANKING);
  const [notice, setNotice] = useState<string | null>(null);
  const size = item?.answers?.length ?? 0;

  useEffect(() => {
    setState(EMPTY_RANKING);
    setNotice(null);
  }, [item?.assignment_id]);

  const apply = useCallback(
    (step: RankingStep) => {
      if (step.kind === "state") {
        setState(step.state);
        setNotice(null);
      } else if (step.kind === "send") {
        if (send({ kind: "ranking", ranks: step.ranks })) setState(EMPTY_RANKING);
      } else {
        setNotice(step.why || null);
      }
    },
    [send],
  );

  const act = useCallback((key: string) => apply(rankingKey(state, key, size)), [apply, state, size]);
  const placeNext = useCallback(
    (answer: number) => {
      if (!state.placed.some((p) => p.answer === answer)) apply(place(state, answer));
    },
    [apply, state],
  );
  const move = useCallback((answer: number, to: number) => {
    setState((current) => {
      const moving = current.placed.find((p) => p.answer === answer);
      if (!moving) return current;
      const rest = current.placed.filter((p) => p.answer !== answer);
      rest.splice(Math.min(to, rest.length), 0, { answer, tied: false });
      return { placed: rest.map((p, i) => (i === 0 ? { ...p, tied: false } : p)), tieNext: false };
    });
  }, []);
  const reset = useCallback(() => setState(EMPTY_RANKING), []);
  return { state, size, notice, act, placeNext, move, reset };
}

export function RankingView({
  item,
  ranking,
  onSkip,
}: {
  item: LeasedPair;
  ranking: RankingDraft;
  onSkip: () => void;
}) {
  const answers = item.answers ?? [];
  const shown = shownRanks(ranking.state, answers.length);
  const ready = ranksOf(ranking.state, answers.length) !== null;
  const [dragged, setDragged] = useState<number | null>(null);
  const orderRanks = placementRanks(ranking.state);
  return (
    <div className="ranking">
      <div className="answers ranking-answers">
        {answers.map((answer, i) => (
          <section
            key={i}
            className={`answer${shown[i] !== null ? " placed" : ""}`}
            aria-label={`Answer ${i + 1}`}
            data-answer={i + 1}
            onClick={() => ranking.placeNext(i)}
          >
            <header>
              Answer <kbd>{i + 1}</kbd>
              {shown[i] !== null && (
                <span className="rank-badge" aria-label={`Rank ${shown[i]}`}>
                  #{shown[i]}
                </span>
              )}
            </header>
            <Markdown text={answer.text} />
          </section>
        ))}
      </div>
      <div className="controls">
        <ol className="ranking-order" aria-label="Your order">
          {ranking.state.placed.map((p, i) => (
            <li
              key={p.answer}
              draggable
              onDragStart={() => setDragged(p.answer)}
              onDragOver={(e) => e.preventDefault()}
              onDrop={() => {
                if (dragged !== null) ranking.move(dragged, i);
                setDragged(null);
              }}
            >
              #{orderRanks[i]} {p.tied ? "= " : ""}Answer {p.answer + 1}
            </li>
          ))}
          {ranking.state.tieNext && <li className="pending">= (ties the next one)</li>}
        </ol>
        {ranking.notice && (
          <p className="hint" role="status">
            {ranking.notice}
          </p>
        )}
        <div className="choices">
          <button type="button" disabled={!ready} onClick={() => ranking.act("Enter")}>
            Send ranking <kbd>Enter</kbd>
          </button>
          <button type="button" className="secondary" onClick={() => ranking.act("Backspace")}>
            Undo <kbd>⌫</kbd>
          </button>
          <button type="button" className="secondary" onClick={ranking.reset}>
            Start over
          </button>
          <button type="button" className="secondary" onClick={onSkip}>
            Skip <kbd>S</kbd>
          </button>
        </div>
      </div>
    </div>
  );
}
