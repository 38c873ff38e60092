// The project's pairs: a filtered, paged list, and one pair with every judgment and rationale.
import { useEffect, useState } from "react";
import { api, errorText, type Schemas } from "../api/client";
import { Markdown } from "../components/Markdown";
import { PromptView } from "../components/Prompt";
import { navigate } from "../router";
import { number, percent, when } from "./format";

type Detail = Schemas["ComparisonDetail"];
const PAGE = 50;
const OUTCOME: Record<string, string> = {
  a: "a better",
  b: "b better",
  tie: "tie",
  both_bad: "both bad",
  disagreement: "no majority",
};

function link(to: string) {
  return (e: React.MouseEvent) => {
    e.preventDefault();
    navigate(to);
  };
}

export function PairsPanel({ projectId, pairId }: { projectId: number; pairId: number | null }) {
  return pairId === null ? (
    <PairList projectId={projectId} />
  ) : (
    <PairDetail projectId={projectId} pairId={pairId} />
  );
}

function PairList({ projectId }: { projectId: number }) {
  const [round, setRound] = useState("");
  const [status, setStatus] = useState("");
  const [offset, setOffset] = useState(0);
  const [page, setPage] = useState<Schemas["PaginatedComparisonList"] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    const query: Record<string, string | number> = { limit: PAGE, offset };
    if (round) query.round = round;
    if (status) query.status = status;
    void api
      .GET("/api/projects/{project_id}/comparisons/", {
        params: { path: { project_id: projectId }, query: query as never },
      })
      .then(({ data, error: failure }) => {
        setPage(data ?? null);
        setError(failure ? errorText(failure) : null);
      });
  }, [projectId, round, status, offset]);
  const base = `/app/admin/${projectId}/pairs`;
  return (
    <section className="panel" aria-label="Pairs">
      <h2>Pairs</h2>
      <div className="filters">
        <label className="inline">
          Round
          <input
            type="number"
            min={1}
            value={round}
            onChange={(e) => {
              setRound(e.target.value);
              setOffset(0);
            }}
          />
        </label>
        <label className="inline">
          Status
          <select
            value={status}
            onChange={(e) => {
              setStatus(e.target.value);
              setOffset(0);
            }}
          >
            <option value="">any</option>
            <option value="open">open</option>
            <option value="complete">complete</option>
            <option value="cancelled">cancelled</option>
          </select>
        </label>
        {page && <span className="muted">{page.count} pairs</span>}
      </div>
      {error && (
        <p className="notice" role="alert">
          {error}
        </p>
      )}
      <table>
        <thead>
          <tr>
            <th>Pair</th>
            <th>Round</th>
            <th>Status</th>
            <th>Judgments</th>
            <th>Gold</th>
            <th>Pairing</th>
            <th>Made</th>
          </tr>
        </thead>
        <tbody>
          {(page?.results ?? []).map((c) => (
            <tr key={c.id}>
              <td>
                <a href={`${base}/${c.id}`} onClick={link(`${base}/${c.id}`)}>
                  #{c.id}
                </a>
              </td>
              <td>{c.round ?? "–"}</td>
              <td>{c.status}</td>
              <td>
                {c.judgment_count} / {c.required_annotations}
              </td>
              <td>{c.gold_outcome ? OUTCOME[c.gold_outcome] : "–"}</td>
              <td>{String((c.selection as Record<string, unknown>)?.strategy ?? "–")}</td>
              <td>{when(c.created_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {page && page.count > PAGE && (
        <div className="pager">
          <button
            type="button"
            className="secondary"
            disabled={offset === 0}
            onClick={() => setOffset(Math.max(0, offset - PAGE))}
          >
            Previous
          </button>
          <span className="muted">
            {offset + 1}–{Math.min(offset + PAGE, page.count)} of {page.count}
          </span>
          <button
            type="button"
            className="secondary"
            disabled={offset + PAGE >= page.count}
            onClick={() => setOffset(offset + PAGE)}
          >
            Next
          </button>
        </div>
      )}
    </section>
  );
}

const KIND: Record<string, string> = {
  pairwise: "which of two answers is better",
  demonstration: "write or rewrite the answer",
  rating: "rate each answer on its own",
  ranking: "rank the answers",
};

/** The answers the item showed: a ranking item's whole list, else its two. */
function shownAnswers(detail: Detail): Detail["answers"] {
  return detail.kind === "ranking" && detail.listed_answers.length > 0
    ? detail.listed_answers
    : detail.answers;
}

/** What the item's other feedback types gave: written answers, ratings, rankings. */
function OtherFeedback({ detail }: { detail: Detail }) {
  const label = new Map(shownAnswers(detail).map((a) => [String(a.response_id), a.side]));
  return (
    <>
      {detail.demonstrations.length > 0 && (
        <section aria-label="Written answers">
          <h3>Written answers</h3>
          {detail.demonstrations.map((d) => (
            <div key={d.id} className="answer">
              <header>
                {d.username} <span className="badge">{d.review_status}</span>{" "}
                <span className="muted">
                  {d.edited_from === null
                    ? "written anew"
                    : `rewritten from answer ${label.get(String(d.edited_from)) ?? "?"}`}
                </span>
              </header>
              <Markdown text={d.text} />
            </div>
          ))}
        </section>
      )}
      {detail.ratings.length > 0 && (
        <table aria-label="Ratings">
          <thead>
            <tr>
              <th>Annotator</th>
              <th>Answer a</th>
              <th>Answer b</th>
              <th>Scale</th>
            </tr>
          </thead>
          <tbody>
            {detail.ratings.map((r, i) => (
              <tr key={i}>
                <td>{r.username}</td>
                <td>{r.score_a}</td>
                <td>{r.score_b}</td>
                <td>{r.scale}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {detail.rankings.length > 0 && (
        <table aria-label="Rankings">
          <thead>
            <tr>
              <th>Annotator</th>
              <th>Order, best first</th>
            </tr>
          </thead>
          <tbody>
            {detail.rankings.map((r, i) => (
              <tr key={i}>
                <td>{r.username}</td>
                <td>
                  {Object.entries(r.ranks)
                    .sort((x, y) => x[1] - y[1])
                    .map(([id, rank]) => `#${rank} answer ${label.get(id) ?? id}`)
                    .join(" · ")}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

function writer(answer: Detail["answers"][number]): string {
  if (answer.model_version_number !== null) return `written by policy v${answer.model_version_number}`;
  return answer.external_model ? `outside: ${answer.external_model}` : answer.source;
}

function PairDetail({ projectId, pairId }: { projectId: number; pairId: number }) {
  const [detail, setDetail] = useState<Detail | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void api
      .GET("/api/projects/{project_id}/comparisons/{comparison_id}/", {
        params: { path: { project_id: projectId, comparison_id: pairId } },
      })
      .then(({ data, error: failure }) => {
        setDetail(data ?? null);
        setError(failure ? errorText(failure) : null);
      });
  }, [projectId, pairId]);
  const back = `/app/admin/${projectId}/pairs`;
  // Choices between two answers are a pairwise item's feedback (an AI judge's too).
  const showJudgments =
    detail !== null && (detail.kind === "pairwise" || detail.judgments.length > 0);
  return (
    <section className="panel pair-detail" aria-label={`Pair ${pairId}`}>
      <a href={back} onClick={link(back)}>
        ← All pairs
      </a>
      <h2>Pair #{pairId}</h2>
      {error && (
        <p className="notice" role="alert">
          {error}
        </p>
      )}
      {detail && (
        <>
          <p className="muted" data-testid="pair-resolution">
            Round {detail.round ?? "–"} · {detail.status} · {detail.judgments.length} of{" "}
            {detail.required_annotations} judgments · majority:{" "}
            {OUTCOME[detail.resolution.label] ?? detail.resolution.label}
            {detail.resolution.label !== "disagreement" &&
              ` (${percent(detail.resolution.agreement)} agree)`}{" "}
            · crowd model P(a better): {number(detail.posterior_a, 2)}
            {detail.gold_outcome && ` · gold: ${OUTCOME[detail.gold_outcome]}`}
          </p>
          <section className="prompt" aria-label="Prompt">
            <PromptView prompt={detail.prompt} />
          </section>
          <p className="muted">Kind: {KIND[detail.kind] ?? detail.kind}</p>
          <div className="answers">
            {shownAnswers(detail).map((answer) => (
              <section key={answer.side} className="answer" aria-label={`Answer ${answer.side}`}>
                <header>
                  {answer.side} <span className="muted">· {writer(answer)}</span>
                </header>
                <Markdown text={answer.text} />
              </section>
            ))}
          </div>
          <OtherFeedback detail={detail} />
          {showJudgments && <h3>Judgments</h3>}
          {showJudgments &&
            (detail.judgments.length === 0 ? (
            <p className="muted">Nobody has judged this pair yet.</p>
          ) : (
            <table aria-label="Judgments">
              <thead>
                <tr>
                  <th>Annotator</th>
                  <th>Said</th>
                  <th>As seen</th>
                  <th>Strength</th>
                  <th>Rationale</th>
                  <th>Time</th>
                  <th>When</th>
                </tr>
              </thead>
              <tbody>
                {detail.judgments.map((j) => (
                  <tr key={j.id}>
                    <td>
                      {j.username}
                      {j.source !== "human" && <span className="badge">{j.source}</span>}
                    </td>
                    <td>{OUTCOME[j.outcome] ?? j.outcome}</td>
                    <td className="muted">
                      {j.choice} (a on the {j.a_on_left ? "left" : "right"})
                    </td>
                    <td>{j.strength ?? "–"}</td>
                    <td className="rationale-text">{j.rationale || "–"}</td>
                    <td>{j.time_spent_ms === null ? "–" : `${(j.time_spent_ms / 1000).toFixed(1)} s`}</td>
                    <td>{when(j.created_at)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          ))}
          {Object.keys(detail.selection ?? {}).length > 0 && (
            <details>
              <summary>How this pair was chosen</summary>
              <pre>{JSON.stringify(detail.selection, null, 2)}</pre>
            </details>
          )}
        </>
      )}
    </section>
  );
}
