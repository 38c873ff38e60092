import { FakeSource, demonstrationItem, pair } from "../test/fixtures";
import { PairQueue, type PairwiseDecision, type Verdict } from "./queue";

const verdict = (choice: PairwiseDecision["choice"]): Verdict => ({
  kind: "pairwise",
  choice,
  strength: null,
  rationale: "",
  time_spent_ms: 1,
  submission_key: crypto.randomUUID(),
});

describe("PairQueue", () => {
  it("prefetches the next pair and swaps it in at once on a judgment", async () => {
    const source = new FakeSource([pair(1), pair(2), pair(3)]);
    const queue = new PairQueue(source);
    await queue.start();
    expect(queue.state.current?.assignment_id).toBe(1);
    expect(queue.state.ahead?.assignment_id).toBe(2);

    const sent = queue.judge(verdict("left"));
    // Synchronously, before any request finished: the prefetched pair is on screen.
    expect(queue.state.current?.assignment_id).toBe(2);
    await sent;
    expect(source.judged.map(([id, v]) => [id, v.choice])).toEqual([[1, "left"]]);
    expect(queue.state.ahead?.assignment_id).toBe(3);
    expect(queue.state.done).toBe(1);
  });

  it("says the queue is empty once every pair is judged", async () => {
    const queue = new PairQueue(new FakeSource([pair(1)]));
    await queue.start();
    await queue.judge(verdict("tie"));
    expect(queue.state.current).toBeNull();
    expect(queue.state.phase).toBe("empty");
  });

  it("tells the annotator when a lease expired and the judgment was not counted", async () => {
    const source = new FakeSource([pair(1), pair(2)]);
    source.nextOutcome = { ok: false, expired: true, message: "expired" };
    const queue = new PairQueue(source);
    await queue.start();
    await queue.judge(verdict("right"));
    expect(queue.state.notice).toMatch(/lease on the last pair expired/);
    expect(queue.state.done).toBe(0);
    expect(queue.state.current?.assignment_id).toBe(2);
  });

  it("skips and releases the prefetched pair when the page closes", async () => {
    const source = new FakeSource([pair(1), pair(2), pair(3)]);
    const queue = new PairQueue(source);
    await queue.start();
    await queue.skip();
    expect(source.skipped).toEqual([1]);
    queue.releaseAhead();
    expect(source.released).toEqual([3]);
  });

  it("never shows a judged pair again when keys come faster than the prefetch", async () => {
    const source = new FakeSource([pair(1), pair(2), pair(3)]);
    const queue = new PairQueue(source);
    await queue.start();
    const first = queue.judge(verdict("left")); // shows 2; prefetching 3 is still to come
    const second = queue.judge(verdict("right")); // nothing prefetched yet: loading
    expect(queue.state.current).toBeNull();
    await Promise.all([first, second]);
    expect(queue.state.current?.assignment_id).toBe(3);
    expect(queue.state.ahead).toBeNull();
    await queue.judge(verdict("tie"));
    expect(source.submitted.map(([id]) => id)).toEqual([1, 2, 3]);
    expect(queue.state.phase).toBe("empty");
  });

  it("resends a submit that got no answer with the same submission_key", async () => {
    class FlakySource extends FakeSource {
      attempts: string[] = [];
      async submit(id: number, v: Verdict) {
        this.attempts.push(v.submission_key);
        if (this.attempts.length < 3) throw new TypeError("Failed to fetch");
        return super.submit(id, v);
      }
    }
    const source = new FlakySource([demonstrationItem(1), demonstrationItem(2)]);
    const queue = new PairQueue(source, [0, 0]);
    await queue.start();
    const written: Verdict = {
      kind: "demonstration",
      text: "My answer",
      edited_from: null,
      time_spent_ms: 1,
      submission_key: crypto.randomUUID(),
    };
    await queue.judge(written);
    expect(source.attempts).toEqual(Array(3).fill(written.submission_key));
    expect(queue.state.done).toBe(1);
    expect(queue.state.notice).toBeNull();
  });

  it("says a demonstration was not saved when the server refuses it, and goes on", async () => {
    const source = new FakeSource([demonstrationItem(1), demonstrationItem(2)]);
    source.nextOutcome = {
      ok: false,
      expired: false,
      message: "You already judged this pair: another answer.",
    };
    const queue = new PairQueue(source, [0]);
    await queue.start();
    await queue.judge({
      kind: "demonstration",
      text: "Another answer",
      edited_from: "left",
      time_spent_ms: 1,
      submission_key: crypto.randomUUID(),
    });
    expect(queue.state.notice).toBe(
      "The last answer was not saved: You already judged this pair: another answer.",
    );
    expect(queue.state.current?.assignment_id).toBe(2);
    expect(queue.state.phase).toBe("ready");
  });

  it("gives up on a submit that never gets an answer, and says so", async () => {
    class OfflineSource extends FakeSource {
      async submit(): Promise<never> {
        throw new TypeError("Failed to fetch");
      }
    }
    const queue = new PairQueue(new OfflineSource([pair(1), pair(2)]), [0, 0]);
    await queue.start();
    await queue.judge(verdict("left"));
    expect(queue.state.notice).toBe("The last judgment was not saved: Failed to fetch");
    expect(queue.state.done).toBe(0);
  });
});
