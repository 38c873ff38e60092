import { FakeSource, pair } from "../test/fixtures";
import { PairQueue, type Verdict } from "./queue";

const verdict = (choice: Verdict["choice"]): Verdict => ({
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
    expect(source.submitted.map(([id, v]) => [id, v.choice])).toEqual([[1, "left"]]);
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
});
