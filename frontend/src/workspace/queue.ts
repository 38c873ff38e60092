// The annotator's queue: the pair on screen plus one prefetched pair, so a judgment swaps the
// next pair in at once and the network work happens behind it, one request at a time.
import type { LeasedPair } from "../api/client";
import type { Choice, Strength } from "./keys";

export interface Verdict {
  choice: Choice;
  strength: Strength | null;
  rationale: string;
  time_spent_ms: number;
  submission_key: string;
}

export type Outcome = { ok: true } | { ok: false; expired: boolean; message: string };

/** What the queue needs from the server; the real one wraps the typed API client. */
export interface PairSource {
  next(): Promise<LeasedPair | null>;
  ahead(): Promise<LeasedPair | null>;
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

export class PairQueue {
  state: QueueState = { current: null, ahead: null, phase: "loading", notice: null, done: 0 };
  private tail: Promise<void> = Promise.resolve();
  /** Judgments and skips not yet sent; until they are, the server still counts their leases. */
  private unsent = 0;
  private listeners = new Set<(state: QueueState) => void>();

  constructor(private source: PairSource) {}

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
      const outcome = await this.source.submit(finished.assignment_id, verdict).finally(() => {
        this.unsent -= 1;
      });
      if (outcome.ok) this.set({ done: this.state.done + 1 });
      else this.set({ notice: noticeFor(outcome) });
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
      if (!outcome.ok) this.set({ notice: noticeFor(outcome) });
      // Refill only once every finished pair is sent: the server would hand back a pair whose
      // judgment is still queued here as the "live lease".
      if (this.unsent === 0) await this.refill();
    });
  }

  /** Give the prefetched pair back when the page closes, so others may take it. */
  releaseAhead(): void {
    if (this.state.ahead) this.source.release(this.state.ahead.assignment_id);
  }
}

function noticeFor(outcome: Extract<Outcome, { ok: false }>): string {
  return outcome.expired
    ? "Your lease on the last pair expired and others have judged it; that choice was not counted."
    : `The last judgment was not saved: ${outcome.message}`;
}
