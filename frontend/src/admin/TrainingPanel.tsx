// Live training runs (polled), their curves, and the model versions with gates and promotion.
import { useEffect, useState } from "react";
import { api, errorText, items, type Schemas } from "../api/client";
import { LinesChart } from "./Charts";
import { duration, etaSeconds, number, percent, when } from "./format";
import { GateResults, gatesOf } from "./GateResults";
import { type NamedMetric, namedMetrics, otherMetrics } from "./metrics";
import { seriesFrom } from "./series";
import { usePoll } from "./usePoll";

type Run = Schemas["TrainingRunOutput"];
type Version = Schemas["ModelVersionOutput"];
const POLL_MS = 2000;
const LIVE: Run["status"][] = ["queued", "running"];
const RUN_KINDS = ["reward", "dpo", "ppo", "generate"] as const;

/** The server's own estimate where it sends one (newer API), else ours from the pace so far. */
function serverEta(run: Run): number | null {
  const eta = (run as { eta_seconds?: unknown }).eta_seconds;
  return typeof eta === "number" ? eta : null;
}

export function RunProgress({ run, now }: { run: Run; now: number }) {
  const fraction = run.progress ?? 0;
  return (
    <div className="run-progress">
      <div
        className="bar"
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={run.total_steps ?? 0}
        aria-valuenow={run.step ?? 0}
      >
        <div className="fill" style={{ width: `${Math.round(fraction * 100)}%` }} />
      </div>
      <span className="steps" data-testid={`run-${run.id}-steps`}>
        {run.step ?? 0} / {run.total_steps ?? "?"}
      </span>
      {run.status === "running" && (
        <span className="eta">ETA {duration(serverEta(run) ?? etaSeconds(run, now))}</span>
      )}
    </div>
  );
}

function RunMetrics({ run }: { run: Run }) {
  const [points, setPoints] = useState<Schemas["MetricPoint"][]>([]);
  useEffect(() => {
    let cancelled = false;
    let last = -1;
    const all: Schemas["MetricPoint"][] = [];
    const load = async () => {
      const { data } = await api.GET("/api/runs/{run_id}/metrics/", {
        params: {
          path: { run_id: run.id },
          query: last >= 0 ? ({ after_step: last } as never) : undefined,
        },
      });
      if (cancelled || !data || data.length === 0) return;
      all.push(...data);
      last = Math.max(last, ...data.map((p) => p.step));
      setPoints([...all]);
    };
    void load();
    const id = window.setInterval(load, POLL_MS);
    return () => {
      cancelled = true;
      window.clearInterval(id);
    };
  }, [run.id]);
  const series = seriesFrom(points);
  return (
    <div className="charts two">
      <LinesChart
        title={`Run ${run.id}: loss`}
        rows={series.rows}
        xKey="step"
        lines={series.lossKeys.map((key) => ({ key }))}
      />
      <LinesChart
        title={`Run ${run.id}: accuracy`}
        rows={series.rows}
        xKey="step"
        lines={series.accuracyKeys.map((key) => ({ key }))}
        domain={[0, 1]}
      />
    </div>
  );
}

function RunsTable({ projectId, onChange }: { projectId: number; onChange: () => void }) {
  const [now, setNow] = useState(Date.now());
  const [error, setError] = useState<string | null>(null);
  const [kind, setKind] = useState<(typeof RUN_KINDS)[number]>("reward");
  const [runs, reload] = usePoll(
    async () => {
      setNow(Date.now());
      const { data } = await api.GET("/api/projects/{project_id}/runs/", {
        params: { path: { project_id: projectId } },
      });
      return data ? items(data) : undefined;
    },
    POLL_MS,
    [projectId],
  );
  const [selected, setSelected] = useState<number | null>(null);
  const list = runs ?? [];
  const shown = list.find((r) => r.id === selected) ?? list.find((r) => LIVE.includes(r.status)) ?? list[0];

  const act = async (run: Run, action: "cancel" | "retry") => {
    const path = { params: { path: { run_id: run.id } } };
    const { error: failure } =
      action === "cancel"
        ? await api.POST("/api/runs/{run_id}/cancel/", path)
        : await api.POST("/api/runs/{run_id}/retry/", path);
    setError(failure ? errorText(failure) : null);
    reload();
    onChange();
  };
  const start = async () => {
    const { error: failure } = await api.POST("/api/projects/{project_id}/runs/", {
      params: { path: { project_id: projectId } },
      body: { kind } as Schemas["TrainingRunCreateInput"],
    });
    setError(failure ? errorText(failure) : null);
    reload();
  };

  return (
    <section className="panel" aria-label="Training runs">
      <div className="panel-head">
        <h2>Training runs</h2>
        <span className="spacer" />
        <select value={kind} onChange={(e) => setKind(e.target.value as typeof kind)}>
          {RUN_KINDS.map((k) => (
            <option key={k}>{k}</option>
          ))}
        </select>
        <button type="button" onClick={start}>
          Start run
        </button>
      </div>
      {error && <p className="notice" role="alert">{error}</p>}
      {list.length === 0 ? (
        <p className="muted">No runs yet.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Run</th>
              <th>Kind</th>
              <th>Status</th>
              <th>Progress</th>
              <th>Started</th>
              <th>Took</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.map((run) => (
              <tr
                key={run.id}
                className={run.id === shown?.id ? "selected" : ""}
                onClick={() => setSelected(run.id)}
              >
                <td>#{run.id}</td>
                <td>{run.kind}</td>
                <td>
                  <span className={`badge status-${run.status}`}>{run.status}</span>
                  {run.error && <div className="error-text">{run.error}</div>}
                </td>
                <td>
                  <RunProgress run={run} now={now} />
                </td>
                <td>{when(run.started_at)}</td>
                <td title={run.finished_at ? `finished ${when(run.finished_at)}` : undefined}>
                  {runDuration(run, now)}
                </td>
                <td>
                  {LIVE.includes(run.status) &&
                    (run.cancel_requested ? (
                      <span className="muted">stopping…</span>
                    ) : (
                      <button type="button" className="danger" onClick={() => act(run, "cancel")}>
                        Cancel
                      </button>
                    ))}
                  {(run.status === "failed" || run.status === "cancelled") && (
                    <button type="button" className="secondary" onClick={() => act(run, "retry")}>
                      Retry
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {shown && <RunMetrics key={shown.id} run={shown} />}
    </section>
  );
}

function shownValue(metric: NamedMetric): string {
  if (metric.kind === "fraction") return percent(metric.value, 1);
  return metric.kind === "seconds" ? duration(metric.value) : number(metric.value);
}

function VersionMetrics({ version }: { version: Version }) {
  const named = namedMetrics(version.kind, version.metrics);
  const others = otherMetrics(version.kind, version.metrics);
  return (
    <>
      {named.map((m) => (
        <div key={m.key} title={m.key}>
          {m.label}:{" "}
          <strong>{shownValue(m)}</strong>
          {m.detail && <span className="muted"> {m.detail}</span>}
        </div>
      ))}
      {others.length > 0 && (
        <details>
          <summary className="muted">all metrics ({others.length})</summary>
          {others.map(([key, value]) => (
            <div key={key}>
              {key}: {number(value)}
            </div>
          ))}
        </details>
      )}
    </>
  );
}

/** How long a run took (finished) or has taken so far (running). */
export function runDuration(run: Pick<Run, "started_at" | "finished_at">, now: number): string {
  if (!run.started_at) return "–";
  const end = run.finished_at ? Date.parse(run.finished_at) : now;
  return duration((end - Date.parse(run.started_at)) / 1000);
}

/** What promoting `version` means, said before the admin confirms it. */
export function promotionWarnings(version: Version, activeNumber: number | null): string[] {
  const warnings: string[] = [];
  if (version.kind === "policy") {
    const { passed, gates } = gatesOf(version.gate_results);
    if (passed === null && gates.length === 0) {
      warnings.push(
        "It has not been evaluated: no gate has checked it (an evaluation may still be running).",
      );
    } else if (passed === false) {
      const failed = gates
        .filter(([, gate]) => gate.passed === false)
        .map(([name]) => name.replace(/_/g, " "));
      warnings.push(`Its gates failed (${failed.join(", ") || "see Gates"}): it serves anyway.`);
    }
    warnings.push(
      "It answers the project's name on the policy server at once. The open round keeps the " +
        "version it was opened with: open the next round to have this one write answers.",
    );
  }
  if (activeNumber !== null && version.number < activeNumber) {
    warnings.push(`This rolls back from v${activeNumber}.`);
  }
  return warnings;
}

export function PromoteButton({
  version,
  activeNumber,
  projectId,
  onDone,
}: {
  version: Version;
  activeNumber: number | null;
  projectId: number;
  onDone: () => void;
}) {
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [promoted, setPromoted] = useState(false);
  const [roundOpened, setRoundOpened] = useState<string | null>(null);
  if (version.status === "active") {
    return (
      <span className="promote">
        <span className="badge ok">serving</span>
        {promoted && version.kind === "policy" && !roundOpened && (
          <button type="button" onClick={() => void openRound()}>
            Open the next round with v{version.number}
          </button>
        )}
        {roundOpened && <span className="muted">{roundOpened}</span>}
        {error && <span className="error-text">{error}</span>}
      </span>
    );
  }
  const older = activeNumber !== null && version.number < activeNumber;
  const label = older ? "Roll back to this" : "Promote";
  async function promote() {
    const { error: failure } = await api.POST("/api/versions/{version_id}/promote/", {
      params: { path: { version_id: version.id } },
      body: { reason: "from the dashboard" },
    });
    setConfirming(false);
    setError(failure ? errorText(failure) : null);
    setPromoted(!failure);
    onDone();
  }
  async function openRound() {
    const { data, error: failure } = await api.POST("/api/projects/{project_id}/rounds/", {
      params: { path: { project_id: projectId } },
    });
    if (failure) setError(errorText(failure));
    else if (data) {
      setRoundOpened(`Round ${data.number} opened: v${version.number} is writing its answers.`);
    }
  }
  return (
    <span className="promote">
      {confirming ? (
        <div role="dialog" aria-label={`${label} v${version.number}`} className="confirm">
          <ul>
            {promotionWarnings(version, activeNumber).map((w) => (
              <li key={w}>{w}</li>
            ))}
          </ul>
          <button type="button" onClick={() => void promote()}>
            Confirm: {label.toLowerCase()} v{version.number}
          </button>
          <button type="button" className="secondary" onClick={() => setConfirming(false)}>
            Cancel
          </button>
        </div>
      ) : (
        <button type="button" onClick={() => setConfirming(true)}>
          {label}
        </button>
      )}
      {error && <span className="error-text">{error}</span>}
    </span>
  );
}

function activeNumber(versions: Version[], kind: string): number | null {
  return versions.find((v) => v.kind === kind && v.status === "active")?.number ?? null;
}

function VersionsTable({ projectId, tick }: { projectId: number; tick: number }) {
  const [versions, reload] = usePoll(
    async () => {
      const { data } = await api.GET("/api/projects/{project_id}/versions/", {
        params: { path: { project_id: projectId } },
      });
      return data ? items(data) : undefined;
    },
    POLL_MS * 3,
    [projectId, tick],
  );
  return (
    <section className="panel" aria-label="Model versions">
      <h2>Model versions</h2>
      <table>
        <thead>
          <tr>
            <th>Version</th>
            <th>Status</th>
            <th>Metrics</th>
            <th>Gates</th>
            <th>Created</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {(versions ?? []).map((v) => (
            <tr key={v.id} data-testid={`version-${v.id}`}>
              <td>
                {v.kind} v{v.number}
              </td>
              <td>
                <span className={`badge status-${v.status}`}>{v.status}</span>
              </td>
              <td className="metrics">
                <VersionMetrics version={v} />
              </td>
              <td>{v.kind === "policy" ? <GateResults results={v.gate_results} /> : "–"}</td>
              <td>{when(v.created_at)}</td>
              <td>
                <PromoteButton
                  version={v}
                  activeNumber={activeNumber(versions ?? [], v.kind)}
                  projectId={projectId}
                  onDone={reload}
                />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function TrainingPanel({ projectId }: { projectId: number }) {
  const [tick, setTick] = useState(0);
  return (
    <>
      <RunsTable projectId={projectId} onChange={() => setTick((t) => t + 1)} />
      <VersionsTable projectId={projectId} tick={tick} />
    </>
  );
}
