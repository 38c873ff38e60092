// The annotator workspace: prompt, two answers side by side, one key per judgment. A
// demonstration item (write the answer) has its own view and draft: DemonstrationEditor.
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { api, type LeasedPair, type Schemas } from "../api/client";
import { Markdown } from "../components/Markdown";
import { PromptView } from "../components/Prompt";
import { navigate } from "../router";
import { DemonstrationEditor, useDemonstration } from "./DemonstrationEditor";
import { KEY_HELP, actionForKey, strengthFor, type Choice, type Strength } from "./keys";
import { PairwiseAnswers } from "./PairwiseAnswers";
import { RankingView, useRanking } from "./RankingView";
import { RatingView, useRating } from "./RatingView";
import {
  PairQueue,
  type Decision,
  type DemonstrationDecision,
  type PairSource,
  type RankingDecision,
  type RatingDecision,
  type QueueState,
} from "./queue";

const STRENGTHS: Strength[] = ["slight", "clear", "strong"];
const LEAVE_DRAFT = "Leave this page? The answer you are writing is not sent and will be lost.";
const CHOICE_LABEL: Record<Choice, string> = {
  left: "Left better",
  right: "Right better",
  tie: "Tie",
  both_bad: "Both bad",
};

function isTextField(target: HTMLElement | null): boolean {
  return !!target && ["TEXTAREA", "INPUT", "SELECT"].includes(target.tagName);
}

/** A button or link, which Enter presses. */
function isControl(target: HTMLElement | null): boolean {
  return !!target && ["BUTTON", "A"].includes(target.tagName);
}

function useQueue(source: PairSource): [PairQueue, QueueState] {
  const queue = useMemo(() => new PairQueue(source), [source]);
  const [state, setState] = useState<QueueState>(queue.state);
  useEffect(() => {
    const unsubscribe = queue.subscribe(setState);
    void queue.start();
    const onHide = () => queue.releaseAhead();
    window.addEventListener("pagehide", onHide);
    return () => {
      unsubscribe();
      window.removeEventListener("pagehide", onHide);
    };
  }, [queue]);
  return [queue, state];
}

function useNow(intervalMs: number): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const id = window.setInterval(() => setNow(Date.now()), intervalMs);
    return () => window.clearInterval(id);
  }, [intervalMs]);
  return now;
}

function Progress({ projectId, done }: { projectId: number; done: number }) {
  const [progress, setProgress] = useState<Schemas["Progress"] | null>(null);
  useEffect(() => {
    void api
      .GET("/api/web/projects/{project_id}/progress/", {
        params: { path: { project_id: projectId } },
      })
      .then(({ data }) => setProgress(data ?? null));
  }, [projectId, done]);
  if (!progress) return null;
  return (
    <div className="progress-counts" aria-label="Progress">
      <span>
        <strong data-testid="judged-today">{progress.judged_today}</strong> judged today
      </span>
      <span>
        <strong>{progress.left_in_round}</strong> left in
        {progress.round !== null ? ` round ${progress.round}` : " the round"}
      </span>
    </div>
  );
}

export interface WorkspaceProps {
  projectId: number;
  projectName: string;
  guidelines: string;
  source: PairSource;
  /** A choice key acts only once the pair has been on screen this long (the project's). */
  minViewMs?: number;
}

export function Workspace({
  projectId,
  projectName,
  guidelines,
  source,
  minViewMs = 0,
}: WorkspaceProps) {
  const [queue, state] = useQueue(source);
  const [strength, setStrength] = useState<Strength>("clear");
  const [rationale, setRationale] = useState("");
  const [showGuidelines, setShowGuidelines] = useState(false);
  const [showHelp, setShowHelp] = useState(false);
  const [flash, setFlash] = useState<string | null>(null);
  const shownAt = useRef(Date.now());
  const rationaleBox = useRef<HTMLTextAreaElement>(null);
  const now = useNow(5000);
  const pair: LeasedPair | null = state.current;

  useEffect(() => {
    // Effects run once the pair is painted: the view time counts from what the eye can see.
    shownAt.current = Date.now();
    // Each pair starts from the defaults, however the last one ended (judged or skipped).
    setStrength("clear");
    setRationale("");
  }, [pair?.assignment_id]);

  /** Send a decision on the item on screen; false (and nothing sent) where it came too fast. */
  const send = useCallback(
    (decision: Decision, label: string): boolean => {
      if (!pair) return false;
      const seenMs = Date.now() - shownAt.current;
      if (seenMs < minViewMs) {
        // A key pressed before the pair could be read judges nothing, and says so.
        setFlash(`Too fast: read both answers first (${((minViewMs - seenMs) / 1000).toFixed(1)} s)`);
        return false;
      }
      void queue.judge({
        ...decision,
        time_spent_ms: Date.now() - shownAt.current,
        submission_key: crypto.randomUUID(),
      });
      setFlash(label);
      return true;
    },
    [pair, queue, minViewMs],
  );

  const judge = useCallback(
    (choice: Choice) => {
      const decision = {
        kind: "pairwise" as const,
        choice,
        strength: strengthFor(choice, strength),
        rationale: rationale.trim(),
      };
      if (!send(decision, CHOICE_LABEL[choice])) return;
      setStrength("clear");
      setRationale("");
    },
    [send, strength, rationale],
  );

  const sendAnswer = useCallback(
    (decision: DemonstrationDecision) => send(decision, "Answer sent"),
    [send],
  );
  const demonstration = useDemonstration(pair?.kind === "demonstration" ? pair : null, sendAnswer);
  const sendRanking = useCallback(
    (decision: RankingDecision) => send(decision, "Ranking sent"),
    [send],
  );
  const ranking = useRanking(pair?.kind === "ranking" ? pair : null, sendRanking);
  const sendRatings = useCallback(
    (decision: RatingDecision) => send(decision, "Ratings sent"),
    [send],
  );
  const rating = useRating(pair?.kind === "rating" ? pair : null, sendRatings);

  const skip = useCallback(() => {
    if (!pair || !demonstration.mayDrop("skip")) return;
    void queue.skip();
    setFlash("Skipped");
  }, [pair, queue, demonstration]);

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      const target = event.target as HTMLElement | null;
      const inTextField = isTextField(target);
      if (inTextField && event.key === "Escape") {
        target?.blur();
        return;
      }
      if (event.key === "Escape") {
        setShowGuidelines(false);
        setShowHelp(false);
        return;
      }
      const action = actionForKey(
        {
          key: event.key,
          ctrlKey: event.ctrlKey,
          metaKey: event.metaKey,
          altKey: event.altKey,
          inTextField,
          onControl: isControl(target),
        },
        pair?.kind,
      );
      if (!action) return;
      event.preventDefault();
      switch (action.kind) {
        case "choose":
          judge(action.choice);
          break;
        case "strength":
          setStrength(action.strength);
          break;
        case "skip":
          skip();
          break;
        case "rationale":
          rationaleBox.current?.focus();
          break;
        case "copy":
        case "blank":
        case "edit":
        case "submit":
          demonstration.act(action);
          break;
        case "rank":
          ranking.act(action.key);
          break;
        case "rate":
          rating.act(action.key);
          break;
        case "guidelines":
          setShowGuidelines((shown) => !shown);
          break;
        case "help":
          setShowHelp((shown) => !shown);
          break;
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [judge, skip, pair, demonstration, ranking, rating]);

  useEffect(() => {
    if (!flash) return;
    const id = window.setTimeout(() => setFlash(null), 900);
    return () => window.clearTimeout(id);
  }, [flash]);

  const expired = pair !== null && Date.parse(pair.expires_at) < now;

  return (
    <div className="workspace">
      <div className="workspace-bar">
        <h1>{projectName}</h1>
        <Progress projectId={projectId} done={state.done} />
        {flash && (
          <div className="flash" aria-live="polite">
            {flash}
          </div>
        )}
        <div className="bar-buttons">
          <button type="button" onClick={() => setShowGuidelines((s) => !s)}>
            Guidelines <kbd>G</kbd>
          </button>
          <button type="button" onClick={() => setShowHelp((s) => !s)}>
            Keys <kbd>?</kbd>
          </button>
          <a
            className="button-link"
            href={`/app/annotate/${projectId}/history`}
            onClick={(e) => {
              e.preventDefault();
              if (demonstration.unsaved && !window.confirm(LEAVE_DRAFT)) return;
              navigate(`/app/annotate/${projectId}/history`);
            }}
          >
            Your judgments
          </a>
        </div>
      </div>
      {showGuidelines && (
        <aside className="panel guidelines" aria-label="Guidelines">
          {guidelines ? <Markdown text={guidelines} /> : <p>This project has no guidelines.</p>}
        </aside>
      )}
      {showHelp && (
        <aside className="panel key-help" aria-label="Keys">
          <dl>
            {KEY_HELP[pair?.kind ?? "pairwise"].map(([key, what]) => (
              <div key={key}>
                <dt>{key}</dt>
                <dd>{what}</dd>
              </div>
            ))}
          </dl>
        </aside>
      )}
      {state.notice && (
        <div className="notice" role="alert">
          {state.notice}
        </div>
      )}
      {state.phase === "loading" && <p className="status">Loading the next pair…</p>}
      {state.phase === "empty" && (
        <div className="status empty" role="status">
          <h2>Nothing left to judge</h2>
          <p>
            Every pair you may judge is judged or taken by someone else. New pairs appear when a
            round opens or pairs are added; come back later or reload the page.
          </p>
        </div>
      )}
      {state.phase === "error" && (
        // The notice above says why (paused, no longer a member, offline): no second alarm.
        <div className="status">
          <button type="button" onClick={() => void queue.start()}>
            Try again
          </button>
        </div>
      )}
      {pair && (
        <main className="pair" data-assignment={pair.assignment_id}>
          {expired && (
            <div className="notice" role="alert">
              Your lease on this pair has expired: it may go to someone else, and your judgment
              counts only if it still has room. Judge it now or skip with <kbd>S</kbd>.
            </div>
          )}
          <section className="prompt" aria-label="Prompt">
            <PromptView prompt={pair.prompt} />
          </section>
          {pair.kind === "ranking" ? (
            <RankingView item={pair} ranking={ranking} onSkip={skip} />
          ) : pair.kind === "rating" ? (
            <RatingView item={pair} rating={rating} onSkip={skip} />
          ) : pair.kind === "demonstration" ? (
            <DemonstrationEditor item={pair} demonstration={demonstration} onSkip={skip} />
          ) : (
            <>
              <PairwiseAnswers item={pair} />
              <div className="controls">
                <div className="choices">
                  {(Object.keys(CHOICE_LABEL) as Choice[]).map((choice, i) => (
                    <button key={choice} type="button" onClick={() => judge(choice)}>
                      {CHOICE_LABEL[choice]} <kbd>{i + 1}</kbd>
                    </button>
                  ))}
                  <button type="button" className="secondary" onClick={() => void queue.skip()}>
                    Skip <kbd>S</kbd>
                  </button>
                </div>
                <div className="strength" role="radiogroup" aria-label="Strength">
                  {STRENGTHS.map((s, i) => (
                    <button
                      key={s}
                      type="button"
                      role="radio"
                      aria-checked={strength === s}
                      className={strength === s ? "selected" : ""}
                      onClick={() => setStrength(s)}
                    >
                      {s} <kbd>{"QWE"[i]}</kbd>
                    </button>
                  ))}
                </div>
                <label className="rationale">
                  <span>
                    Rationale (optional) <kbd>R</kbd>
                  </span>
                  <textarea
                    ref={rationaleBox}
                    value={rationale}
                    onChange={(e) => setRationale(e.target.value)}
                    rows={2}
                    placeholder="Why? Press Esc to go back to the keys."
                  />
                </label>
              </div>
            </>
          )}
        </main>
      )}
    </div>
  );
}
