// Accounts, project membership and API tokens (a token's full key is shown once).
import { useState } from "react";
import { api, errorText, type Me, type Schemas } from "../api/client";
import { when } from "./format";
import { usePoll } from "./usePoll";

type Role = Schemas["UserCreateInput"]["role"];

export function AccountsPanel({ me, projectId }: { me: Me; projectId: number }) {
  const [users, reload] = usePoll(async () => (await api.GET("/api/web/users/")).data, 0, []);
  const [error, setError] = useState<string | null>(null);
  const [newKey, setNewKey] = useState<{ username: string; key: string } | null>(null);
  const [form, setForm] = useState({ username: "", password: "", role: "annotator" as Role });
  const project = me.projects.find((p) => p.id === projectId);

  const done = (failure: unknown) => {
    setError(failure ? errorText(failure) : null);
    reload();
  };
  const create = async (event: React.FormEvent) => {
    event.preventDefault();
    const { error: failure } = await api.POST("/api/web/users/", {
      body: { ...form, is_staff: false, project_id: projectId },
    });
    if (!failure) setForm({ username: "", password: "", role: form.role });
    done(failure);
  };
  const addToProject = async (username: string, role: Role) => {
    const { error: failure } = await api.POST("/api/projects/{project_id}/members/", {
      params: { path: { project_id: projectId } },
      body: { username, role } as Schemas["MembershipInput"],
    });
    done(failure);
  };
  const removeFromProject = async (userId: number) => {
    const { error: failure } = await api.DELETE(
      "/api/web/projects/{project_id}/members/{user_id}/",
      { params: { path: { project_id: projectId, user_id: userId } } },
    );
    done(failure);
  };
  const setActive = async (userId: number, isActive: boolean) => {
    const { error: failure } = await api.PATCH("/api/web/users/{user_id}/", {
      params: { path: { user_id: userId } },
      body: { is_active: isActive },
    });
    done(failure);
  };
  const rotateToken = async (user: Schemas["UserRow"]) => {
    const { data, error: failure } = await api.POST("/api/web/users/{user_id}/token/", {
      params: { path: { user_id: user.id } },
    });
    if (data) setNewKey({ username: user.username, key: data.key });
    done(failure);
  };
  const revokeToken = async (userId: number) => {
    const { error: failure } = await api.DELETE("/api/web/users/{user_id}/token/", {
      params: { path: { user_id: userId } },
    });
    done(failure);
  };

  return (
    <>
      <form className="panel" aria-label="New account" onSubmit={create}>
        <h2>New account in {project?.name ?? "this project"}</h2>
        <div className="row">
          <input
            placeholder="username"
            value={form.username}
            onChange={(e) => setForm({ ...form, username: e.target.value })}
          />
          <input
            placeholder="password"
            type="password"
            autoComplete="new-password"
            value={form.password}
            onChange={(e) => setForm({ ...form, password: e.target.value })}
          />
          <select
            value={form.role}
            onChange={(e) => setForm({ ...form, role: e.target.value as Role })}
          >
            <option value="annotator">annotator</option>
            <option value="client">API client</option>
          </select>
          <button type="submit">Create</button>
        </div>
      </form>
      {error && <p className="notice" role="alert">{error}</p>}
      {newKey && (
        <div className="notice ok" role="status">
          New API token for {newKey.username} (shown once): <code>{newKey.key}</code>
        </div>
      )}
      <section className="panel" aria-label="Accounts">
        <h2>Accounts</h2>
        <table>
          <thead>
            <tr>
              <th>User</th>
              <th>In this project</th>
              <th>Other projects</th>
              <th>API token</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {(users ?? []).map((u) => {
              const here = u.memberships.find((m) => m.project_id === projectId);
              return (
                <tr key={u.id} className={u.is_active ? "" : "inactive"}>
                  <td>
                    {u.username} {u.is_staff && <span className="badge">admin</span>}
                    {!u.is_active && <span className="badge warn">inactive</span>}
                  </td>
                  <td>
                    {here ? (
                      <>
                        {here.role}{" "}
                        <button
                          type="button"
                          className="secondary"
                          onClick={() => removeFromProject(u.id)}
                        >
                          Remove
                        </button>
                      </>
                    ) : u.is_staff ? (
                      "all projects"
                    ) : (
                      <>
                        <button type="button" onClick={() => addToProject(u.username, "annotator")}>
                          Add as annotator
                        </button>
                        <button
                          type="button"
                          className="secondary"
                          onClick={() => addToProject(u.username, "client")}
                        >
                          as client
                        </button>
                      </>
                    )}
                  </td>
                  <td>
                    {u.memberships
                      .filter((m) => m.project_id !== projectId)
                      .map((m) => `${m.project} (${m.role})`)
                      .join(", ") || "–"}
                  </td>
                  <td>
                    {u.token_prefix ? (
                      <>
                        <code>{u.token_prefix}…</code>{" "}
                        <span className="muted">{when(u.token_created)}</span>{" "}
                        <button type="button" className="secondary" onClick={() => revokeToken(u.id)}>
                          Revoke
                        </button>
                      </>
                    ) : (
                      <span className="muted">none</span>
                    )}{" "}
                    <button type="button" className="secondary" onClick={() => rotateToken(u)}>
                      {u.token_prefix ? "Rotate" : "Create"}
                    </button>
                  </td>
                  <td>
                    {u.id !== me.id && (
                      <button
                        type="button"
                        className="secondary"
                        onClick={() => setActive(u.id, !u.is_active)}
                      >
                        {u.is_active ? "Deactivate" : "Reactivate"}
                      </button>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </section>
    </>
  );
}
