import type { LeasedPair } from "../api/client";
import type {
  DemonstrationDecision,
  Outcome,
  PairSource,
  PairwiseDecision,
  Verdict,
} from "../workspace/queue";

type Sent<D> = [number, D & Pick<Verdict, "time_spent_ms" | "submission_key">];

export function pair(id: number, overrides: Partial<LeasedPair> = {}): LeasedPair {
  return {
    assignment_id: id,
    project_id: 1,
    kind: "pairwise",
    prompt: { text: `Prompt ${id}`, messages: null },
    left: { text: `Left answer ${id}` },
    right: { text: `Right answer ${id}` },
    leased_at: new Date().toISOString(),
    expires_at: new Date(Date.now() + 600_000).toISOString(),
    ...overrides,
  };
}

/** A demonstration item: the same shape, another kind. */
export function demonstrationItem(id: number, overrides: Partial<LeasedPair> = {}): LeasedPair {
  return pair(id, { kind: "demonstration", ...overrides });
}

/** A server in memory: hands out the given pairs in order, one live lease plus one ahead. */
export class FakeSource implements PairSource {
  submitted: [number, Verdict][] = [];
  skipped: number[] = [];
  released: number[] = [];
  nextOutcome: Outcome = { ok: true };
  private leased: LeasedPair[] = [];

  constructor(private pool: LeasedPair[]) {}

  /** The pairwise judgments sent, in order. */
  get judged(): Sent<PairwiseDecision>[] {
    return this.submitted.filter((s): s is Sent<PairwiseDecision> => s[1].kind === "pairwise");
  }
  /** The demonstrations sent, in order. */
  get written(): Sent<DemonstrationDecision>[] {
    return this.submitted.filter(
      (s): s is Sent<DemonstrationDecision> => s[1].kind === "demonstration",
    );
  }

  private lease(): LeasedPair | null {
    const p = this.pool.shift() ?? null;
    if (p) this.leased.push(p);
    return p;
  }
  async next() {
    return this.leased[0] ?? this.lease();
  }
  async ahead() {
    if (this.leased.length >= 2) return this.leased[1];
    if (this.leased.length === 0) return null;
    return this.lease();
  }
  private finish(id: number) {
    this.leased = this.leased.filter((p) => p.assignment_id !== id);
  }
  async submit(id: number, verdict: Verdict) {
    this.submitted.push([id, verdict]);
    this.finish(id);
    return this.nextOutcome;
  }
  async skip(id: number) {
    this.skipped.push(id);
    this.finish(id);
    return { ok: true } as Outcome;
  }
  release(id: number) {
    this.released.push(id);
  }
}
