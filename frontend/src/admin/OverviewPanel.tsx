// Rounds of the project and the per-round charts: agreement, reward accuracy, policy win rate.
import { useState } from "react";
import { api, errorText, type Schemas } from "../api/client";
import { LinesChart } from "./Charts";
import { percent, when } from "./format";
import { usePoll } from "./usePoll";

/** [value - low, high - value] for an error bar, or null where the interval is not known. */
export function errorBar(
  value: number | null,
  low: number | null,
  high: number | null,
): number[] | null {
  return value === null || low === null || high === null ? null : [value - low, high - value];
}

export function OverviewPanel({ projectId }: { projectId: number }) {
  const [error, setError] = useState<string | null>(null);
  const path = { params: { path: { project_id: projectId } } };
  const [summary, reloadSummary] = usePoll(
    async () => (await api.GET("/api/web/projects/{project_id}/rounds/", path)).data,
    5000,
    [projectId],
  );
  const [rounds, reloadRounds] = usePoll(
    async () => (await api.GET("/api/projects/{project_id}/rounds/", path)).data,
    5000,
    [projectId],
  );
  const reload = () => {
    reloadSummary();
    reloadRounds();
  };
  const openRound = (rounds ?? []).find((r) => r.status === "open");

  const close = async (number: number) => {
    const { error: failure } = await api.POST("/api/projects/{project_id}/rounds/{number}/close/", {
      params: { path: { project_id: projectId, number } },
    });
    setError(failure ? errorText(failure) : null);
    reload();
  };
  const open = async () => {
    const { error: failure } = await api.POST("/api/projects/{project_id}/rounds/", path);
    setError(failure ? errorText(failure) : null);
    reload();
  };

  const rows = (summary ?? []).map((r: Schemas["RoundSummary"]) => ({
    round: r.number,
    agreement: r.percent_agreement,
    alpha: r.krippendorff_alpha,
    "reward accuracy": r.reward_accuracy,
    "reward accuracy interval": errorBar(r.reward_accuracy, r.reward_accuracy_low, r.reward_accuracy_high),
    "policy win rate": r.policy_win_rate,
    "policy win rate interval": errorBar(r.policy_win_rate, r.policy_win_rate_low, r.policy_win_rate_high),
  }));
  const judgedTwice = (summary ?? []).some((r) => r.percent_agreement !== null);

  return (
    <>
      <section className="panel" aria-label="Rounds">
        <div className="panel-head">
          <h2>Rounds</h2>
          <span className="spacer" />
          {openRound ? (
            <button type="button" onClick={() => close(openRound.number)}>
              Close round {openRound.number}
            </button>
          ) : (
            <button type="button" onClick={open}>
              Open a round
            </button>
          )}
        </div>
        {error && <p className="notice" role="alert">{error}</p>}
        {(summary ?? [])
          .filter((r) => r.status === "open" && r.reachable !== null && r.reachable < r.quota)
          .map((r) => (
            <p key={r.number} className="notice" role="alert" data-testid="quota-out-of-reach">
              Round {r.number} cannot reach its quota: at most {r.reachable} of {r.quota} pairs can
              complete with its current annotators (the rest were skipped by, or already judged
              by, everyone who could). Add annotators, lower the quota or close the round.
            </p>
          ))}
        <table>
          <thead>
            <tr>
              <th>Round</th>
              <th>Status</th>
              <th>Pairs complete</th>
              <th>Judgments</th>
              <th>Agreement</th>
              <th>α</th>
              <th>Opened</th>
            </tr>
          </thead>
          <tbody>
            {(summary ?? []).map((r) => {
              const detail = (rounds ?? []).find((x) => x.number === r.number);
              return (
                <tr key={r.number}>
                  <td>{r.number}</td>
                  <td>
                    <span className={`badge status-${r.status}`}>{r.status}</span>
                  </td>
                  <td>
                    {r.complete} / {r.comparisons} (quota {r.quota})
                  </td>
                  <td>{r.judgments}</td>
                  <td>{percent(r.percent_agreement)}</td>
                  <td>{r.krippendorff_alpha === null ? "–" : r.krippendorff_alpha.toFixed(2)}</td>
                  <td>{when(detail?.opened_at)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </section>
      <section className="panel charts three" aria-label="Per-round charts">
        {judgedTwice ? (
          <LinesChart
            title="Annotator agreement"
            rows={rows}
            xKey="round"
            lines={[{ key: "agreement" }, { key: "alpha" }]}
            domain={[-0.25, 1]}
          />
        ) : (
          <figure className="chart" aria-label="Annotator agreement">
            <figcaption>Annotator agreement</figcaption>
            <p className="muted" data-testid="agreement-empty">
              No pair has two judgments yet: agreement needs an overlap of two or more (the
              project's judgments per pair) and pairs judged by two annotators.
            </p>
          </figure>
        )}
        <LinesChart
          title="Reward-model accuracy (held out, 95% interval)"
          rows={rows}
          xKey="round"
          lines={[{ key: "reward accuracy", errorKey: "reward accuracy interval" }]}
          domain={[0, 1]}
        />
        <LinesChart
          title="Policy win rate vs parent (95% interval)"
          rows={rows}
          xKey="round"
          lines={[{ key: "policy win rate", errorKey: "policy win rate interval" }]}
          domain={[0, 1]}
        />
      </section>
    </>
  );
}
