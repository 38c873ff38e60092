// The annotator's queue: the pair on screen plus one prefetched pair, so a judgment swaps the
// next pair in at once and the network work happens behind it, one request at a time.
import type { LeasedPair } from "../api/client";
import type { Choice, FeedbackKind, Side, Strength } from "./keys";

/** What the annotator decided on a pairwise item. */
export interface PairwiseDecision {
  kind: "pairwise";
  choice: Choice;
  strength: Strength | null;
  rationale: string;
}

/** The answer the annotator wrote on a demonstration item, and the side it started from. */
export interface DemonstrationDecision {
  kind: "demonstration";
  text: string;
  edited_from: Side | null;
}

/** A ranking item's ranks: one per answer in the order shown, 1 the best, equal ranks tie. */
export interface RankingDecision {
  kind: "ranking";
  ranks: number[];
}

/** A rating item's two scores, by the side each answer was shown on (thumbs are 1 / 7). */
export interface RatingDecision {
  kind: "rating";
  left_score: number;
  right_score: number;
}

export type Decision = PairwiseDecision | DemonstrationDecision | RankingDecision | RatingDecision;

/** A decision as it is sent: the same submission_key on every try, so a repeat counts once. */
export type Verdict = Decision & { time_spent_ms: number; submission_key: string };

export type Outcome = { ok: true } | { ok: false; expired: boolean; message: string };

/** What the queue needs from the server; the real one wraps the typed API client. */
export interface PairSource {
  next(): Promise<LeasedPair | null>;
  ahead(): Promise<LeasedPair | null>;
  /** Resolves with the server's answer; rejects only when the request got no answer at all. */
  submit(assignmentId: number, verdict: Verdict): Promise<Outcome>;
  skip(assignmentId: number): Promise<Outcome>;
  release(assignmentId: number): void;
}

export type Phase = "loading" | "ready" | "empty" | "error";

export interface QueueState {
  current: LeasedPair | null;
  ahead: LeasedPair | null;
  phase: Phase;
  notice: string | null;
  done: number;
}

/** How long to wait before each resend of a submit that got no answer (network down). */
const RETRY_DELAYS_MS = [1000, 3000, 8000];

export class PairQueue {
  state: QueueState = { current: null, ahead: null, phase: "loading", notice: null, done: 0 };
  private tail: Promise<void> = Promise.resolve();
  /** Judgments and skips not yet sent; until they are, the server still counts their leases. */
  private unsent = 0;
  private listeners = new Set<(state: QueueState) => void>();

  constructor(
    private source: PairSource,
    private retryDelaysMs: number[] = RETRY_DELAYS_MS,
  ) {}

  subscribe(listener: (state: QueueState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private set(patch: Partial<QueueState>): void {
    this.state = { ...this.state, ...patch };
    for (const listener of this.listeners) listener(this.state);
  }

  /** Run server work strictly in order, so a quick second key never races the first. */
  private enqueue(work: () => Promise<void>): Promise<void> {
    this.tail = this.tail.then(work).catch((err: unknown) => {
      this.set({ phase: "error", notice: err instanceof Error ? err.message : String(err) });
    });
    return this.tail;
  }

  start(): Promise<void> {
    this.set({ phase: "loading", notice: null });
    return this.enqueue(() => this.refill());
  }

  /** Fetch a pair for the screen if it is empty, then prefetch the one after it. */
  private async refill(): Promise<void> {
    if (this.state.current === null && this.state.ahead !== null) {
      this.set({ current: this.state.ahead, ahead: null, phase: "ready" });
    }
    if (this.state.current === null) {
      const current = await this.source.next();
      this.set({ current, phase: current ? "ready" : "empty" });
    }
    if (this.state.current !== null && this.state.ahead === null) {
      const ahead = await this.source.ahead();
      // A quick key may have judged the screen's pair while this request was out.
      if (ahead === null || ahead.assignment_id === this.state.current?.assignment_id) return;
      if (this.state.current === null) this.set({ current: ahead, phase: "ready" });
      else this.set({ ahead });
    }
  }

  /** Show the prefetched pair now; the finished one is sent behind it. */
  private advance(): LeasedPair | null {
    const finished = this.state.current;
    if (finished === null) return null;
    const next = this.state.ahead;
    this.set({ current: next, ahead: null, phase: next ? "ready" : "loading", notice: null });
    return finished;
  }

  judge(verdict: Verdict): Promise<void> {
    const finished = this.advance();
    if (finished === null) return Promise.resolve();
    this.unsent += 1;
    return this.enqueue(async () => {
      const outcome = await this.submitRetrying(finished.assignment_id, verdict).finally(() => {
        this.unsent -= 1;
      });
      if (outcome.ok) this.set({ done: this.state.done + 1 });
      else this.set({ notice: noticeFor(outcome, verdict.kind) });
      if (this.unsent === 0) await this.refill();
    });
  }

  skip(): Promise<void> {
    const finished = this.advance();
    if (finished === null) return Promise.resolve();
    this.unsent += 1;
    return this.enqueue(async () => {
      const outcome = await this.source.skip(finished.assignment_id).finally(() => {
        this.unsent -= 1;
      });
      if (!outcome.ok) this.set({ notice: noticeFor(outcome, finished.kind) });
      // Refill only once every finished pair is sent: the server would hand back a pair whose
      // judgment is still queued here as the "live lease".
      if (this.unsent === 0) await this.refill();
    });
  }

  /** Resend a submit that got no answer with the same verdict (and so the same submission_key):
   * the server stores it once and answers a repeat with what it stored. */
  private async submitRetrying(assignmentId: number, verdict: Verdict): Promise<Outcome> {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.source.submit(assignmentId, verdict);
      } catch (err) {
        if (attempt >= this.retryDelaysMs.length) {
          const message = err instanceof Error ? err.message : String(err);
          return { ok: false, expired: false, message };
        }
        await sleep(this.retryDelaysMs[attempt]);
      }
    }
  }

  /** Give the prefetched pair back when the page closes, so others may take it. */
  releaseAhead(): void {
    if (this.state.ahead) this.source.release(this.state.ahead.assignment_id);
  }
}

const NOT_COUNTED: Record<FeedbackKind, { expired: string; notSaved: string }> = {
  pairwise: {
    expired:
      "Your lease on the last pair expired and others have judged it; that choice was not counted.",
    notSaved: "The last judgment was not saved",
  },
  demonstration: {
    expired:
      "Your lease on the last item expired and others answered it; your answer was not counted.",
    notSaved: "The last answer was not saved",
  },
  rating: {
    expired:
      "Your lease on the last item expired and others rated it; your ratings were not counted.",
    notSaved: "The last ratings were not saved",
  },
  ranking: {
    expired:
      "Your lease on the last item expired and others ranked it; your ranking was not counted.",
    notSaved: "The last ranking was not saved",
  },
};

function noticeFor(outcome: Extract<Outcome, { ok: false }>, kind: FeedbackKind): string {
  const words = NOT_COUNTED[kind];
  return outcome.expired ? words.expired : `${words.notSaved}: ${outcome.message}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}
