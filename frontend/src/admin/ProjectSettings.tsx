// A live project's own settings: the loop (overlap, quota, algorithm, gates) and the feedback
// mix (what share of a round's prompts asks for a written answer or ratings). Saving sends only
// what changed (PATCH); the server checks each value and the shares' sum.
import { useEffect, useState } from "react";
import { api, errorText, type Schemas } from "../api/client";

type Project = Schemas["ProjectOutput"];
type Update = Schemas["PatchedProjectUpdateInput"];
type Key = keyof Update & keyof Project;

interface Spec {
  key: Key;
  label: string;
  help?: string;
  step?: number;
  options?: [string, string][];
}

const ALGORITHMS: [string, string][] = [
  ["dpo", "DPO (from pairs)"],
  ["ppo", "PPO (against the reward model)"],
  ["rloo", "RLOO (against the reward model)"],
  ["kto", "KTO (from rated answers)"],
];

export const PROJECT_SETTINGS: { title: string; fields: Spec[] }[] = [
  {
    title: "Rounds and judging",
    fields: [
      { key: "required_annotations", label: "judgments per pair", step: 1 },
      { key: "round_quota", label: "round quota (complete items)", step: 1 },
      { key: "gold_rate", label: "gold share", step: 0.05 },
      { key: "min_view_ms", label: "minimum view time (ms)", step: 100 },
    ],
  },
  {
    title: "Feedback mix (the rest of a round's training prompts are pairs)",
    fields: [
      {
        key: "demonstration_share",
        label: "written answers share",
        step: 0.05,
        help: "trains an SFT step before the reward model",
      },
      { key: "review_demonstrations", label: "a second annotator reviews written answers" },
      { key: "rating_share", label: "ratings share", step: 0.05, help: "trains KTO" },
      {
        key: "rating_scale",
        label: "rating scale",
        options: [
          ["thumbs", "thumbs up / down"],
          ["likert7", "1 to 7"],
        ],
      },
      {
        key: "ranking_share",
        label: "rankings share",
        step: 0.05,
        help: "k answers ranked; their pairs train the reward model and DPO",
      },
      { key: "ranking_size", label: "answers per ranking (3 to 6)", step: 1 },
    ],
  },
  {
    title: "Policy training and gates",
    fields: [
      { key: "training_algorithm", label: "algorithm", options: ALGORITHMS },
      { key: "gate_min_win_rate", label: "gate: minimum win rate", step: 0.05 },
      { key: "gate_max_kl", label: "gate: maximum KL", step: 0.5 },
      { key: "gate_min_heldout_accuracy", label: "gate: minimum held-out accuracy", step: 0.05 },
      { key: "auto_promote", label: "promote a passing candidate automatically" },
    ],
  },
];

/** The fields whose draft value differs from the stored project. */
export function changedFields(project: Project, draft: Partial<Project>): Update {
  const changes: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(draft)) {
    if (value !== project[key as keyof Project]) changes[key] = value;
  }
  return changes as Update;
}

export function ProjectSettings({ projectId }: { projectId: number }) {
  const [project, setProject] = useState<Project | null>(null);
  const [draft, setDraft] = useState<Partial<Project>>({});
  const [message, setMessage] = useState<{ error: boolean; text: string } | null>(null);
  const path = { params: { path: { project_id: projectId } } };

  useEffect(() => {
    void api.GET("/api/projects/{project_id}/", path).then(({ data, error }) => {
      if (data) setProject(data);
      else setMessage({ error: true, text: errorText(error) });
    });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [projectId]);

  if (!project) return <section className="panel">{message?.text ?? "Loading…"}</section>;
  const value = (key: Key) => (key in draft ? draft[key] : project[key]);
  const save = async (event: React.FormEvent) => {
    event.preventDefault();
    const changes = changedFields(project, draft);
    if (Object.keys(changes).length === 0) {
      setMessage({ error: false, text: "Nothing changed." });
      return;
    }
    const { data, error } = await api.PATCH("/api/projects/{project_id}/", {
      ...path,
      body: changes,
    });
    if (data) {
      setProject(data);
      setDraft({});
      setMessage({ error: false, text: "Saved; the next round uses these settings." });
    } else {
      setMessage({ error: true, text: errorText(error) });
    }
  };
  return (
    <form className="panel settings" aria-label="Project settings" onSubmit={save}>
      <div className="panel-head">
        <h2>Project settings</h2>
        <span className="spacer" />
        <button type="submit">Save project</button>
      </div>
      {message && (
        <p className={message.error ? "notice" : "status"} role={message.error ? "alert" : "status"}>
          {message.text}
        </p>
      )}
      {PROJECT_SETTINGS.map((group) => (
        <fieldset key={group.title} aria-label={group.title}>
          <legend>{group.title}</legend>
          {group.fields.map((spec) => (
            <ProjectField
              key={spec.key}
              spec={spec}
              value={value(spec.key)}
              onChange={(v) => setDraft({ ...draft, [spec.key]: v })}
            />
          ))}
        </fieldset>
      ))}
    </form>
  );
}

function ProjectField({
  spec,
  value,
  onChange,
}: {
  spec: Spec;
  value: unknown;
  onChange: (value: unknown) => void;
}) {
  if (typeof value === "boolean") {
    return (
      <label className="setting">
        <input type="checkbox" checked={value} onChange={(e) => onChange(e.target.checked)} />
        {spec.label}
      </label>
    );
  }
  if (spec.options) {
    return (
      <label className="setting">
        <span>{spec.label}</span>
        <select value={String(value)} onChange={(e) => onChange(e.target.value)}>
          {spec.options.map(([option, text]) => (
            <option key={option} value={option}>
              {text}
            </option>
          ))}
        </select>
      </label>
    );
  }
  return (
    <label className="setting">
      <span>{spec.label}</span>
      <input
        type="number"
        aria-label={spec.label}
        step={spec.step}
        value={String(value ?? "")}
        onChange={(e) => onChange(e.target.value === "" ? null : Number(e.target.value))}
      />
      {spec.help && <small>{spec.help}</small>}
    </label>
  );
}
