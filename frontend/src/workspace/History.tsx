// An annotator's own record in a project: accuracy on gold pairs with its interval, agreement
// with the others, judgments per round and the latest judgments. Only pairs already judged.
import { useEffect, useState } from "react";
import { api, errorText, type Schemas } from "../api/client";
import { navigate } from "../router";

type History = Schemas["AnnotatorHistory"];
type Row = History["latest"][number];

function share(value: number | null | undefined): string {
  return value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`;
}

/** "75% (3 of 4; 95% interval 30%–95%)", or why there is no figure yet. */
export function goldSummary(history: History): string {
  if (history.gold_judged === 0 || history.gold_accuracy === null) {
    return "no gold pairs judged yet";
  }
  const interval =
    history.gold_low === null || history.gold_high === null
      ? ""
      : `; 95% interval ${share(history.gold_low)}–${share(history.gold_high)}`;
  return `${share(history.gold_accuracy)} (${history.gold_correct} of ${history.gold_judged}${interval})`;
}

/** "2 written answers · 1 rating", or "none" when only pairs were judged. */
export function otherFeedback(history: History): string {
  const parts = [
    [history.written_answers, "written answer"],
    [history.ratings, "rating"],
    [history.rankings, "ranking"],
  ]
    .filter(([count]) => Number(count) > 0)
    .map(([count, noun]) => `${count} ${noun}${count === 1 ? "" : "s"}`);
  return parts.length ? parts.join(" · ") : "none";
}

function choiceText(row: Row): string {
  const names: Record<string, string> = {
    left: "left better",
    right: "right better",
    tie: "tie",
    both_bad: "both bad",
  };
  const name = names[row.choice] ?? row.choice;
  return row.strength ? `${name}, ${row.strength}` : name;
}

function goldCell(row: Row): string {
  if (row.gold === "correct") return "✓ matched";
  if (row.gold === "wrong") return "✗ missed";
  return "–";
}

function othersCell(row: Row): string {
  if (row.other_judgments === 0) return "nobody else yet";
  if (row.agrees_with_others === null) return `split (${row.other_judgments})`;
  return `${row.agrees_with_others ? "agreed" : "disagreed"} (${row.other_judgments})`;
}

export function HistoryPage({ projectId }: { projectId: number }) {
  const [history, setHistory] = useState<History | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void api
      .GET("/api/projects/{project_id}/my-history/", {
        params: { path: { project_id: projectId } },
      })
      .then(({ data, error: failure }) => {
        if (data) setHistory(data);
        else setError(errorText(failure));
      });
  }, [projectId]);
  const back = `/app/annotate/${projectId}`;
  return (
    <div className="history">
      <div className="workspace-bar">
        <h1>Your judgments</h1>
        <a
          href={back}
          onClick={(e) => {
            e.preventDefault();
            navigate(back);
          }}
        >
          Back to judging
        </a>
      </div>
      {error && (
        <p className="notice" role="alert">
          {error}
        </p>
      )}
      {!history && !error && <p className="status">Loading…</p>}
      {history && (
        <>
          <dl className="summary panel" aria-label="Summary">
            <div>
              <dt>Judgments</dt>
              <dd>{history.judgments}</dd>
            </div>
            <div>
              <dt title="Pairs whose better answer is known in advance">Accuracy on gold pairs</dt>
              <dd data-testid="gold-accuracy">{goldSummary(history)}</dd>
            </div>
            <div>
              <dt>Agreement with other annotators</dt>
              <dd>{share(history.agreement_with_others)}</dd>
            </div>
            <div>
              <dt>Median time a pair</dt>
              <dd>
                {history.median_seconds === null ? "–" : `${history.median_seconds.toFixed(1)} s`}
              </dd>
            </div>
            <div>
              <dt>Other feedback</dt>
              <dd data-testid="other-feedback">{otherFeedback(history)}</dd>
            </div>
            <div>
              <dt>By round</dt>
              <dd>
                {history.rounds.length === 0
                  ? "–"
                  : history.rounds
                      .map((r) => `round ${r.round ?? "–"}: ${r.judgments}`)
                      .join(" · ")}
              </dd>
            </div>
          </dl>
          {history.latest.length === 0 ? (
            <p className="muted">You have not judged a pair in this project yet.</p>
          ) : (
            <section className="panel">
            <table aria-label="Latest judgments">
              <thead>
                <tr>
                  <th>When</th>
                  <th>Round</th>
                  <th>Prompt</th>
                  <th>Your choice</th>
                  <th>Gold</th>
                  <th>Others</th>
                  <th>Time</th>
                  <th>Rationale</th>
                </tr>
              </thead>
              <tbody>
                {history.latest.map((row) => (
                  <tr key={row.id}>
                    <td>{new Date(row.created_at).toLocaleString()}</td>
                    <td>{row.round ?? "–"}</td>
                    <td className="cut">{row.prompt}</td>
                    <td>{choiceText(row)}</td>
                    <td>{goldCell(row)}</td>
                    <td>{othersCell(row)}</td>
                    <td>
                      {row.time_spent_ms === null ? "–" : `${(row.time_spent_ms / 1000).toFixed(1)} s`}
                    </td>
                    <td className="cut">{row.rationale}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            </section>
          )}
        </>
      )}
    </div>
  );
}
