// AI judges: annotators backed by a model behind an OpenAI-compatible endpoint, judging by the
// project's written constitution. Their agreement with the humans is in the table above,
// under each judge's account (ai-<project>-<name>).
import { useState } from "react";
import { api, errorText, type Schemas } from "../api/client";
import { usePoll } from "./usePoll";

type JudgeInput = Schemas["AiJudgeInput"];
const EMPTY: JudgeInput = {
  name: "",
  base_url: "http://127.0.0.1:8001/v1",
  model: "",
  constitution: "",
  api_key_env: "",
  counts_toward_quota: false,
};

export function AiJudgesPanel({ projectId }: { projectId: number }) {
  const path = { params: { path: { project_id: projectId } } };
  const [draft, setDraft] = useState<JudgeInput>(EMPTY);
  const [message, setMessage] = useState<{ error: boolean; text: string } | null>(null);
  const [judges, reload] = usePoll(
    async () => (await api.GET("/api/projects/{project_id}/ai-judges/", path)).data,
    10_000,
    [projectId],
  );
  const add = async (event: React.FormEvent) => {
    event.preventDefault();
    const { error } = await api.POST("/api/projects/{project_id}/ai-judges/", {
      ...path,
      body: draft,
    });
    setMessage(error ? { error: true, text: errorText(error) } : { error: false, text: "Added." });
    if (!error) setDraft(EMPTY);
    reload();
  };
  const run = async (judgeId: number) => {
    const { error } = await api.POST("/api/projects/{project_id}/ai-judges/{judge_id}/run/", {
      params: { path: { project_id: projectId, judge_id: judgeId } },
      body: { limit: 50 },
    });
    setMessage(
      error
        ? { error: true, text: errorText(error) }
        : { error: false, text: "Queued: a worker judges up to 50 open pairs of the round." },
    );
  };
  const set = (key: keyof JudgeInput, value: string | boolean) => setDraft({ ...draft, [key]: value });
  return (
    <section className="panel" aria-label="AI judges">
      <h2>AI judges</h2>
      {message && (
        <p className={message.error ? "notice" : "status"} role={message.error ? "alert" : "status"}>
          {message.text}
        </p>
      )}
      <table>
        <thead>
          <tr>
            <th>Judge</th>
            <th>Model</th>
            <th>Counts toward quota</th>
            <th>Pairs judged</th>
            <th>Constitution</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {(judges ?? []).map((judge) => (
            <tr key={judge.id}>
              <td>{judge.username}</td>
              <td>
                {judge.model} <span className="muted">at {judge.base_url}</span>
              </td>
              <td>{judge.counts_toward_quota ? "yes" : "no: beside the humans"}</td>
              <td>{judge.judgments}</td>
              <td className="cut" title={judge.constitution}>
                sha256 {judge.constitution_sha256.slice(0, 12)}…
              </td>
              <td>
                <button type="button" className="secondary" onClick={() => void run(judge.id)}>
                  Judge the open round
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form className="settings" aria-label="Add an AI judge" onSubmit={add}>
        <fieldset>
          <legend>Add a judge</legend>
          <label className="setting">
            <span>name</span>
            <input value={draft.name} onChange={(e) => set("name", e.target.value)} />
          </label>
          <label className="setting">
            <span>endpoint (…/v1)</span>
            <input value={draft.base_url} onChange={(e) => set("base_url", e.target.value)} />
          </label>
          <label className="setting">
            <span>model</span>
            <input value={draft.model} onChange={(e) => set("model", e.target.value)} />
          </label>
          <label className="setting">
            <span>key variable (on the worker)</span>
            <input
              value={draft.api_key_env ?? ""}
              onChange={(e) => set("api_key_env", e.target.value)}
            />
          </label>
          <label className="setting">
            <input
              type="checkbox"
              checked={draft.counts_toward_quota ?? false}
              onChange={(e) => set("counts_toward_quota", e.target.checked)}
            />
            counts toward the quota
          </label>
          <label className="setting constitution">
            <span>constitution (the principles it judges by)</span>
            <textarea
              rows={4}
              value={draft.constitution}
              onChange={(e) => set("constitution", e.target.value)}
            />
          </label>
          <button type="submit">Add judge</button>
        </fieldset>
      </form>
    </section>
  );
}
