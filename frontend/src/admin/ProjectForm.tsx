// A new project with the settings an admin picks first; the rest keep the API's defaults.
import { useState } from "react";
import { api, errorText, type Schemas } from "../api/client";

export function ProjectForm({ onCreated }: { onCreated: (id: number) => void }) {
  const [form, setForm] = useState({
    name: "",
    slug: "",
    guidelines: "",
    required_annotations: 1,
    round_quota: 64,
  });
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    const { data, error: failure } = await api.POST("/api/projects/", {
      body: form as Schemas["ProjectCreateInput"],
    });
    if (data) onCreated(data.id);
    else setError(errorText(failure));
  };
  return (
    <form className="panel" aria-label="New project" onSubmit={submit}>
      <h2>New project</h2>
      <div className="row">
        <input
          placeholder="name"
          value={form.name}
          onChange={(e) => setForm({ ...form, name: e.target.value })}
        />
        <input
          placeholder="slug"
          value={form.slug}
          onChange={(e) => setForm({ ...form, slug: e.target.value })}
        />
        <label className="inline">
          judgments per pair
          <input
            type="number"
            min={1}
            max={50}
            value={form.required_annotations}
            onChange={(e) => setForm({ ...form, required_annotations: Number(e.target.value) })}
          />
        </label>
        <label className="inline">
          round quota
          <input
            type="number"
            min={1}
            value={form.round_quota}
            onChange={(e) => setForm({ ...form, round_quota: Number(e.target.value) })}
          />
        </label>
      </div>
      <textarea
        placeholder="Guidelines for annotators (Markdown)"
        rows={3}
        value={form.guidelines}
        onChange={(e) => setForm({ ...form, guidelines: e.target.value })}
      />
      <div>
        <button type="submit">Create project</button>
      </div>
      {error && <p className="notice" role="alert">{error}</p>}
    </form>
  );
}
