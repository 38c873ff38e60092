// The admin dashboard: one project at a time, in tabs.
import { useState } from "react";
import type { Me } from "../api/client";
import { navigate } from "../router";
import { AccountsPanel } from "./AccountsPanel";
import { AiJudgesPanel } from "./AiJudgesPanel";
import { AnnotatorsPanel } from "./AnnotatorsPanel";
import { DataPanel } from "./DataPanel";
import { OverviewPanel } from "./OverviewPanel";
import { PairsPanel } from "./PairsPanel";
import { ProjectForm } from "./ProjectForm";
import { ProjectSettings } from "./ProjectSettings";
import { SettingsPanel } from "./SettingsPanel";
import { TrainingPanel } from "./TrainingPanel";

const TABS: [string, string][] = [
  ["overview", "Rounds"],
  ["training", "Training & versions"],
  ["settings", "Settings"],
  ["annotators", "Annotators"],
  ["pairs", "Pairs"],
  ["data", "Data"],
  ["accounts", "Accounts & tokens"],
];

export interface DashboardProps {
  me: Me;
  projectId: number | null;
  tab: string;
  /** The item a tab shows on its own (a pair's id under "pairs"), or null for the tab's list. */
  item?: number | null;
  /** Reload the signed-in user's project list after a project is made. */
  onProjectsChanged: () => Promise<void>;
}

export function Dashboard({ me, projectId, tab, item = null, onProjectsChanged }: DashboardProps) {
  const [creating, setCreating] = useState(false);
  const id = projectId ?? me.projects[0]?.id ?? null;
  const created = async (newId: number) => {
    await onProjectsChanged();
    setCreating(false);
    navigate(`/app/admin/${newId}/overview`);
  };
  if (id === null || creating) return <ProjectForm onCreated={created} />;
  const go = (to: string) => (e: React.MouseEvent) => {
    e.preventDefault();
    navigate(to);
  };
  return (
    <div className="dashboard">
      <div className="dashboard-head">
        <select
          aria-label="Project"
          value={id}
          onChange={(e) => navigate(`/app/admin/${e.target.value}/${tab}`)}
        >
          {me.projects.map((p) => (
            <option key={p.id} value={p.id}>
              {p.name}
            </option>
          ))}
        </select>
        <nav className="tabs">
          {TABS.map(([key, label]) => (
            <a
              key={key}
              href={`/app/admin/${id}/${key}`}
              className={tab === key ? "active" : ""}
              onClick={go(`/app/admin/${id}/${key}`)}
            >
              {label}
            </a>
          ))}
        </nav>
        <span className="spacer" />
        <button type="button" className="secondary" onClick={() => setCreating(true)}>
          New project
        </button>
      </div>
      {tab === "overview" && <OverviewPanel key={id} projectId={id} />}
      {tab === "training" && <TrainingPanel key={id} projectId={id} />}
      {tab === "settings" && (
        <>
          <ProjectSettings key={`project-${id}`} projectId={id} />
          <SettingsPanel key={id} projectId={id} />
        </>
      )}
      {tab === "annotators" && (
        <>
          <AnnotatorsPanel key={id} projectId={id} />
          <AiJudgesPanel key={`ai-${id}`} projectId={id} />
        </>
      )}
      {tab === "pairs" && <PairsPanel key={id} projectId={id} pairId={item} />}
      {tab === "data" && <DataPanel key={id} projectId={id} />}
      {tab === "accounts" && <AccountsPanel key={id} me={me} projectId={id} />}
    </div>
  );
}
