// Prompt upload with per-row errors, preference-data import, and export links.
import { useRef, useState } from "react";
import { api, errorText, type Schemas } from "../api/client";

// Prompt intake reports a 0-based `index`; file imports a 1-based line number as `row`.
type RowError = { index?: unknown; row?: unknown; error?: unknown; detail?: unknown };
type Rejected = { detail?: string; rows?: RowError[]; errors?: RowError[] };

export function RowErrors({ errors }: { errors: RowError[] }) {
  if (errors.length === 0) return null;
  return (
    <table className="row-errors" aria-label="Row errors">
      <thead>
        <tr>
          <th>Row</th>
          <th>Problem</th>
        </tr>
      </thead>
      <tbody>
        {errors.map((e, i) => (
          <tr key={i}>
            <td>{String(e.row ?? (typeof e.index === "number" ? e.index + 1 : "?"))}</td>
            <td>{String(e.error ?? e.detail ?? JSON.stringify(e))}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function formWith(file: File, fields: Record<string, string>): FormData {
  const form = new FormData();
  form.append("file", file);
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  return form;
}

function PromptUpload({ projectId }: { projectId: number }) {
  const file = useRef<HTMLInputElement>(null);
  const [allOrNothing, setAllOrNothing] = useState(true);
  const [result, setResult] = useState<Schemas["PromptBatchOutput"] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const upload = async (event: React.FormEvent) => {
    event.preventDefault();
    const chosen = file.current?.files?.[0];
    if (!chosen) return setError("Choose a JSONL or CSV file first.");
    const form = formWith(chosen, { all_or_nothing: String(allOrNothing) });
    const { data, error: failure } = await api.POST("/api/projects/{project_id}/prompts/upload/", {
      params: { path: { project_id: projectId } },
      body: {} as never,
      bodySerializer: () => form,
    });
    // All or nothing: a bad row rejects the file (400) and every bad row is listed.
    const rejected = failure as Rejected | undefined;
    const listed = rejected?.rows
      ? { created: 0, unchanged: 0, prompt_ids: [], errors: rejected.rows as never }
      : null;
    setResult(data ?? listed);
    setError(failure ? errorText(failure) : null);
  };
  return (
    <form className="panel" aria-label="Upload prompts" onSubmit={upload}>
      <h2>Upload prompts</h2>
      <p className="muted">
        JSONL (one object a line: <code>text</code> or <code>messages</code>, optional{" "}
        <code>external_id</code>) or CSV with a <code>text</code> column.
      </p>
      <input ref={file} type="file" name="prompts" accept=".jsonl,.json,.csv,.txt" />
      <label className="inline">
        <input
          type="checkbox"
          checked={allOrNothing}
          onChange={(e) => setAllOrNothing(e.target.checked)}
        />
        all or nothing
      </label>
      <button type="submit">Upload</button>
      {error && <p className="notice" role="alert">{error}</p>}
      {result && (
        <div className="result" data-testid="upload-result">
          <p>
            {result.created} created, {result.unchanged} unchanged, {result.errors.length} rows
            with errors.
          </p>
          <RowErrors errors={result.errors as RowError[]} />
        </div>
      )}
    </form>
  );
}

function Import({ projectId }: { projectId: number }) {
  const file = useRef<HTMLInputElement>(null);
  const [format, setFormat] = useState("trl");
  const [result, setResult] = useState<Schemas["ImportResult"] | null>(null);
  const [rejectedRows, setRejectedRows] = useState<RowError[]>([]);
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    const chosen = file.current?.files?.[0];
    if (!chosen) return setError("Choose a file first.");
    const { data, error: failure } = await api.POST("/api/projects/{project_id}/import/", {
      params: { path: { project_id: projectId } },
      body: {} as never,
      bodySerializer: () => formWith(chosen, { format }),
    });
    setResult(data ?? null);
    setRejectedRows((failure as Rejected | undefined)?.errors ?? []);
    setError(failure ? errorText(failure) : null);
  };
  return (
    <form className="panel" aria-label="Import preference data" onSubmit={submit}>
      <h2>Import preference data</h2>
      <select value={format} onChange={(e) => setFormat(e.target.value)}>
        <option value="trl">TRL JSONL (prompt / chosen / rejected)</option>
        <option value="hh">Anthropic HH-RLHF</option>
        <option value="alpaca_eval">alpaca_eval pairwise</option>
      </select>
      <input ref={file} type="file" name="import" />
      <button type="submit">Import</button>
      {error && <p className="notice" role="alert">{error}</p>}
      <RowErrors errors={rejectedRows} />
      {result && (
        <div className="result">
          <p>
            {result.rows_read} rows read: {result.comparisons_created} pairs and{" "}
            {result.judgments_created} judgments created, {result.rows_failed} skipped.
            {result.empty_answers > 0 &&
              ` ${result.empty_answers} with an empty answer, kept (a silent reply can be the better one).`}
          </p>
          <RowErrors errors={result.errors as RowError[]} />
        </div>
      )}
    </form>
  );
}

export function DataPanel({ projectId }: { projectId: number }) {
  const base = `/api/projects/${projectId}/export`;
  return (
    <>
      <PromptUpload projectId={projectId} />
      <Import projectId={projectId} />
      <section className="panel" aria-label="Export">
        <h2>Export</h2>
        <ul>
          <li>
            <a href={`${base}/trl/`}>TRL preference JSONL</a> (resolved pairs, agreement as weight)
          </li>
          <li>
            <a href={`${base}/judgments.jsonl`}>Every judgment, JSONL</a>
          </li>
          <li>
            <a href={`${base}/judgments.csv`}>Every judgment, CSV</a>
          </li>
        </ul>
      </section>
    </>
  );
}
