// A rating item: each of the two answers rated on its own (thumbs, or 1 to 7), left first;
// the second rating sends both. Keys in rating.ts; the buttons do the same with a click.
import { useCallback, useEffect, useState } from "react";
import type { LeasedPair } from "../api/client";
import type { Side } from "./keys";
import { PairwiseAnswers } from "./PairwiseAnswers";
import type { RatingDecision } from "./queue";
import {
  EMPTY_RATING,
  THUMBS_DOWN,
  THUMBS_UP,
  rate,
  ratingKey,
  type RatingScale,
  type RatingState,
  type RatingStep,
} from "./rating";

export interface RatingDraft {
  state: RatingState;
  scale: RatingScale;
  notice: string | null;
  act(key: string): void;
  give(side: Side, score: number): void;
}

export function useRating(
  item: LeasedPair | null,
  send: (decision: RatingDecision) => boolean,
): RatingDraft {
  const [state, setState] = useState<RatingState>(EMPTY_RATING);
  const [notice, setNotice] = useState<string | null>(null);
  const scale: RatingScale = item?.rating_scale === "likert7" ? "likert7" : "thumbs";

  useEffect(() => {
    setState(EMPTY_RATING);
    setNotice(null);
  }, [item?.assignment_id]);

  const apply = useCallback(
    (step: RatingStep) => {
      if (step.kind === "state") {
        setState(step.state);
        setNotice(null);
      } else if (step.kind === "send") {
        const decision = { kind: "rating", left_score: step.left, right_score: step.right };
        if (send(decision as RatingDecision)) setState(EMPTY_RATING);
        else setState({ left: step.left, right: null }); // refused (too fast): keep the left
      } else {
        setNotice(step.why || null);
      }
    },
    [send],
  );
  const act = useCallback((key: string) => apply(ratingKey(state, key, scale)), [apply, state, scale]);
  const give = useCallback(
    (side: Side, score: number) => {
      if (side === "left") apply({ kind: "state", state: { ...state, left: score } });
      else if (state.left === null) setNotice("Rate the left answer first.");
      else apply(rate(state, score));
    },
    [apply, state],
  );
  return { state, scale, notice, act, give };
}

function scoresOf(scale: RatingScale): [number, string][] {
  if (scale === "thumbs") {
    return [
      [THUMBS_UP, "👍 good"],
      [THUMBS_DOWN, "👎 bad"],
    ];
  }
  return [1, 2, 3, 4, 5, 6, 7].map((n) => [n, String(n)]);
}

export function RatingView({
  item,
  rating,
  onSkip,
}: {
  item: LeasedPair;
  rating: RatingDraft;
  onSkip: () => void;
}) {
  const current: Side = rating.state.left === null ? "left" : "right";
  const buttons = (side: Side) => (
    <span className="rate-buttons" role="group" aria-label={`Rate the ${side} answer`}>
      {scoresOf(rating.scale).map(([score, label]) => (
        <button
          key={score}
          type="button"
          className={rating.state[side] === score ? "secondary selected" : "secondary"}
          aria-pressed={rating.state[side] === score}
          onClick={() => rating.give(side, score)}
        >
          {label}
        </button>
      ))}
      {side === current && <span className="muted"> ← rating now</span>}
    </span>
  );
  return (
    <>
      <PairwiseAnswers item={item} action={buttons} />
      <div className="controls">
        <p className="muted" data-testid="rating-keys">
          {rating.scale === "thumbs" ? (
            <>
              <kbd>U</kbd> good / <kbd>D</kbd> bad, the left answer first, then the right
            </>
          ) : (
            <>
              <kbd>1</kbd> (bad) … <kbd>7</kbd> (excellent), the left answer first, then the right
            </>
          )}
          ; <kbd>Backspace</kbd> starts over. The second rating sends both.
        </p>
        <button type="button" className="secondary" onClick={onSkip}>
          Skip <kbd>S</kbd>
        </button>
        {rating.notice && (
          <p className="notice" role="status">
            {rating.notice}
          </p>
        )}
      </div>
    </>
  );
}
