// The project's training settings: every field with its default beside it. Saving sends only
// the fields that differ from the defaults; the server checks each and names any it refuses.
import { useEffect, useState } from "react";
import { api, errorText } from "../api/client";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Settings = Record<string, Json>;

const SECTION_TITLES: Record<string, string> = {
  sft: "SFT (written answers)",
  reward: "Reward model",
  dpo: "DPO",
  ppo: "PPO",
  rloo: "RLOO",
  kto: "KTO (rated answers)",
  pairing: "Pair selection (random, or the pairs whose labels would teach the reward model most)",
  ratings_train_reward: "Ratings also train the reward model (as pairs by their scores' difference)",
  evaluation: "Evaluation and held-out split",
  policy_data: "Pairs that train the policy",
  generation_backend: "Generation backend (who writes the answers)",
  served_traffic: "Served traffic kept for the next round (members who opted in)",
  label_resolution: "How judgments become labels: majority vote or the crowd model",
  auto_pause_below: "Pause annotators below this crowd-model reliability (empty: never)",
};

const same = (a: Json, b: Json) => JSON.stringify(a) === JSON.stringify(b);

/** The overrides to store: per section, the fields whose value is not the default. */
export function overridesOf(values: Settings, defaults: Settings): Settings {
  const overrides: Settings = {};
  for (const [section, value] of Object.entries(values)) {
    const fallback = defaults[section];
    if (isObject(value) && isObject(fallback)) {
      const changed = Object.entries(value).filter(([key, v]) => !same(v, fallback[key] ?? null));
      if (changed.length) overrides[section] = Object.fromEntries(changed);
    } else if (!same(value, fallback ?? null)) {
      overrides[section] = value;
    }
  }
  return overrides;
}

function isObject(value: Json | undefined): value is { [key: string]: Json } {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function shown(value: Json): string {
  return value === null ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
}

/** Reads an input back in the shape of the field's default (numbers, null, JSON, text). */
function parsed(text: string, fallback: Json): Json {
  if (typeof fallback === "number" || fallback === null) {
    if (text.trim() === "") return null;
    const number = Number(text);
    return Number.isNaN(number) ? text : number;
  }
  if (typeof fallback === "object") {
    try {
      return JSON.parse(text) as Json;
    } catch {
      return text; // the server names the field and what it expected
    }
  }
  return text;
}

function Field({
  name,
  value,
  fallback,
  onChange,
}: {
  name: string;
  value: Json;
  fallback: Json;
  onChange: (value: Json) => void;
}) {
  const changed = !same(value, fallback);
  if (typeof fallback === "boolean") {
    return (
      <label className={changed ? "setting changed" : "setting"}>
        <input
          type="checkbox"
          checked={value === true}
          onChange={(e) => onChange(e.target.checked)}
        />
        {name} <small>default {String(fallback)}</small>
      </label>
    );
  }
  return (
    <label className={changed ? "setting changed" : "setting"}>
      <span>{name}</span>
      <input
        aria-label={name}
        defaultValue={shown(value)}
        placeholder={shown(fallback)}
        onBlur={(e) => onChange(parsed(e.target.value, fallback))}
      />
      <small>default {shown(fallback) || "none"}</small>
    </label>
  );
}

export function SettingsPanel({ projectId }: { projectId: number }) {
  const [defaults, setDefaults] = useState<Settings | null>(null);
  const [draft, setDraft] = useState<Settings>({});
  const [version, setVersion] = useState(0); // remounts the inputs after a load or a save
  const [message, setMessage] = useState<{ error: boolean; text: string } | null>(null);
  const path = { params: { path: { project_id: projectId } } };

  const show = (view: { values: unknown; defaults: unknown }) => {
    setDefaults(view.defaults as Settings);
    setDraft(view.values as Settings);
    setVersion((v) => v + 1);
  };

  useEffect(() => {
    void api.GET("/api/projects/{project_id}/training-settings/", path).then(({ data, error }) => {
      if (data) show(data);
      else setMessage({ error: true, text: errorText(error) });
    });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [projectId]);

  const save = async (event: React.FormEvent) => {
    event.preventDefault();
    if (!defaults) return;
    const { data, error } = await api.PUT("/api/projects/{project_id}/training-settings/", {
      ...path,
      body: overridesOf(draft, defaults) as never,
    });
    if (data) {
      show(data);
      setMessage({ error: false, text: "Saved; the next run uses these settings." });
    } else {
      setMessage({ error: true, text: errorText(error) });
    }
  };

  if (!defaults) return <section className="panel">{message?.text ?? "Loading…"}</section>;
  const fallbackOf = (section: string, key: string): Json => {
    const values = defaults[section];
    return isObject(values) ? (values[key] ?? null) : null;
  };
  const set = (section: string, key: string | null, value: Json) => {
    const current = draft[section];
    setDraft({
      ...draft,
      [section]: key !== null && isObject(current) ? { ...current, [key]: value } : value,
    });
  };
  return (
    <form className="panel settings" aria-label="Training settings" onSubmit={save}>
      <div className="panel-head">
        <h2>Training settings</h2>
        <span className="spacer" />
        <button type="submit">Save</button>
      </div>
      {message && (
        <p className={message.error ? "notice" : "status"} role={message.error ? "alert" : "status"}>
          {message.text}
        </p>
      )}
      {Object.entries(draft).map(([section, values]) => (
        <fieldset key={`${section}-${version}`} aria-label={SECTION_TITLES[section] ?? section}>
          <legend>{SECTION_TITLES[section] ?? section}</legend>
          {isObject(values) ? (
            Object.entries(values).map(([key, value]) => (
              <Field
                key={key}
                name={key}
                value={value}
                fallback={fallbackOf(section, key)}
                onChange={(v) => set(section, key, v)}
              />
            ))
          ) : (
            <Field
              name={section}
              value={values}
              fallback={defaults[section] ?? null}
              onChange={(v) => set(section, null, v)}
            />
          )}
        </fieldset>
      ))}
    </form>
  );
}
