import { lazy, Suspense, useCallback, useEffect, useMemo, useState } from "react";
import { api, errorText, SIGNED_OUT_EVENT, type Me, type Schemas } from "./api/client";
import { navigate, parseRoute, usePath } from "./router";
import { HistoryPage } from "./workspace/History";
import { apiSource } from "./workspace/source";
import { Workspace } from "./workspace/Workspace";

// Annotators never load the dashboard's code (charts and all).
const Dashboard = lazy(() => import("./admin/Dashboard").then((m) => ({ default: m.Dashboard })));

function Login({ onLogin }: { onLogin: (me: Me) => void }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    const { data, error: failure } = await api.POST("/api/web/login/", {
      body: { username, password },
    });
    if (data) onLogin(data);
    else setError(errorText(failure));
  };
  return (
    <form className="login panel" onSubmit={submit}>
      <h1>Tandem</h1>
      <label>
        Username
        <input
          name="username"
          autoFocus
          autoComplete="username"
          value={username}
          onChange={(e) => setUsername(e.target.value)}
        />
      </label>
      <label>
        Password
        <input
          name="password"
          type="password"
          autoComplete="current-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
      </label>
      {error && (
        <p className="notice" role="alert">
          {error}
        </p>
      )}
      <button type="submit">Sign in</button>
    </form>
  );
}

function Home({ me }: { me: Me }) {
  return (
    <div className="home panel">
      <h1>Your projects</h1>
      {me.projects.length === 0 && <p>You are not a member of any project yet; ask an admin.</p>}
      <ul className="project-list">
        {me.projects.map((p) => {
          // Staff outside a project's membership manage it but are not served its pairs.
          const judges = p.role === "annotator";
          const target = judges ? `/app/annotate/${p.id}` : me.is_staff ? `/app/admin/${p.id}` : null;
          return (
            <li key={p.id}>
              {target ? (
                <a
                  href={target}
                  onClick={(e) => {
                    e.preventDefault();
                    navigate(target);
                  }}
                >
                  {p.name}
                </a>
              ) : (
                <span>{p.name}</span>
              )}
              <span className="muted">{judges ? "judge pairs" : p.role}</span>
              {p.paused && <span className="badge warn">paused</span>}
              {me.is_staff && judges && (
                <a
                  className="secondary-link"
                  href={`/app/admin/${p.id}`}
                  onClick={(e) => {
                    e.preventDefault();
                    navigate(`/app/admin/${p.id}`);
                  }}
                >
                  dashboard
                </a>
              )}
            </li>
          );
        })}
      </ul>
    </div>
  );
}

function AnnotatePage({ projectId }: { projectId: number }) {
  const [project, setProject] = useState<Schemas["ProjectOutput"] | null>(null);
  const [missing, setMissing] = useState(false);
  const source = useMemo(() => apiSource(projectId), [projectId]);
  useEffect(() => {
    void api
      .GET("/api/projects/{project_id}/", { params: { path: { project_id: projectId } } })
      .then(({ data }) => (data ? setProject(data) : setMissing(true)));
  }, [projectId]);
  if (missing) return <p className="notice">This project does not exist or you are not in it.</p>;
  if (!project) return <p className="status">Loading…</p>;
  return (
    <Workspace
      projectId={projectId}
      projectName={project.name}
      guidelines={project.guidelines ?? ""}
      source={source}
      minViewMs={project.min_view_ms}
    />
  );
}

function TopBar({ me, onLogout }: { me: Me; onLogout: () => void }) {
  const go = (to: string) => (e: React.MouseEvent) => {
    e.preventDefault();
    navigate(to);
  };
  return (
    <nav className="topbar">
      <a className="brand" href="/app/" onClick={go("/app/")}>
        Tandem
      </a>
      {me.is_staff && (
        <a href="/app/admin" onClick={go("/app/admin")}>
          Dashboard
        </a>
      )}
      <span className="spacer" />
      <span className="who">{me.username}</span>
      <button type="button" className="secondary" onClick={onLogout}>
        Sign out
      </button>
    </nav>
  );
}

export function App() {
  const path = usePath();
  const route = parseRoute(path);
  const [me, setMe] = useState<Me | null | undefined>(undefined);

  const loadMe = useCallback(async () => {
    const { data } = await api.GET("/api/web/me/");
    setMe(data ?? null);
  }, []);
  useEffect(() => {
    void loadMe();
    // A session that ends mid-work brings back the sign-in form; the page stays where it was.
    const onSignedOut = () => setMe(null);
    window.addEventListener(SIGNED_OUT_EVENT, onSignedOut);
    return () => window.removeEventListener(SIGNED_OUT_EVENT, onSignedOut);
  }, [loadMe]);

  const logout = useCallback(async () => {
    await api.POST("/api/web/logout/");
    setMe(null);
    navigate("/app/login");
  }, []);

  if (me === undefined) return <p className="status">Loading…</p>;
  if (me === null) {
    return (
      <Login
        onLogin={(who) => {
          setMe(who);
          if (route.page === "login") navigate("/app/");
        }}
      />
    );
  }
  let page: React.ReactNode;
  switch (route.page) {
    case "annotate":
      page = <AnnotatePage key={route.projectId} projectId={route.projectId} />;
      break;
    case "history":
      page = <HistoryPage key={route.projectId} projectId={route.projectId} />;
      break;
    case "admin":
      page = me.is_staff ? (
        <Suspense fallback={<p className="status">Loading…</p>}>
          <Dashboard
            me={me}
            projectId={route.projectId}
            tab={route.tab}
            item={route.item}
            onProjectsChanged={loadMe}
          />
        </Suspense>
      ) : (
        <div className="notice forbidden" role="alert">
          This page is for admins only.
        </div>
      );
      break;
    case "not-found":
      page = <p className="notice">There is no such page.</p>;
      break;
    default:
      page = <Home me={me} />;
  }
  return (
    <>
      <TopBar me={me} onLogout={logout} />
      <div className="page">{page}</div>
    </>
  );
}
