// The per-annotator quality table, with pause and resume.
import { useState } from "react";
import { api, errorText } from "../api/client";
import { percent } from "./format";
import { usePoll } from "./usePoll";

export function AnnotatorsPanel({ projectId }: { projectId: number }) {
  const [error, setError] = useState<string | null>(null);
  const [stats, reload] = usePoll(
    async () =>
      (
        await api.GET("/api/projects/{project_id}/statistics/", {
          params: { path: { project_id: projectId } },
        })
      ).data,
    5000,
    [projectId],
  );
  const setPaused = async (userId: number, paused: boolean) => {
    const { error: failure } = await api.POST(
      "/api/projects/{project_id}/annotators/{user_id}/pause/",
      { params: { path: { project_id: projectId, user_id: userId } }, body: { paused } },
    );
    setError(failure ? errorText(failure) : null);
    reload();
  };
  return (
    <section className="panel" aria-label="Annotators">
      <h2>Annotators</h2>
      {stats && (
        <p className="muted">
          {stats.judgments} judgments on {stats.comparisons_judged} pairs · agreement{" "}
          {percent(stats.percent_agreement)} · α{" "}
          {stats.krippendorff_alpha === null ? "–" : stats.krippendorff_alpha.toFixed(2)}
        </p>
      )}
      {error && <p className="notice" role="alert">{error}</p>}
      <table>
        <thead>
          <tr>
            <th>Annotator</th>
            <th>Judgments</th>
            <th>Gold accuracy</th>
            <th title="Crowd model: the chance this annotator's vote names the better side, from every decided vote of the project">
              Reliability
            </th>
            <th>Agreement</th>
            <th>Left bias</th>
            <th>Median time</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {(stats?.annotators ?? []).map((a) => (
            <tr key={a.annotator_id}>
              <td>
                {a.username} {a.paused && <span className="badge warn">paused</span>}{" "}
                {a.flagged && (
                  <span className="badge warn" title="Far below chance on 10 or more decided votes">
                    flagged
                  </span>
                )}
              </td>
              <td>{a.judgments}</td>
              <td>
                {percent(a.gold_accuracy)} <span className="muted">({a.gold_judged})</span>
              </td>
              <td>
                {percent(a.reliability)} <span className="muted">({a.decided_votes})</span>
              </td>
              <td>{percent(a.agreement_with_others)}</td>
              <td>{percent(a.left_bias)}</td>
              <td>{a.median_seconds === null ? "–" : `${a.median_seconds.toFixed(1)} s`}</td>
              <td>
                <button
                  type="button"
                  className="secondary"
                  onClick={() => setPaused(a.annotator_id, !a.paused)}
                >
                  {a.paused ? "Resume" : "Pause"}
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
