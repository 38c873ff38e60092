// A tiny router: the app has a handful of pages, so the History API is enough.
import { useEffect, useState } from "react";

export function navigate(to: string): void {
  window.history.pushState({}, "", to);
  window.dispatchEvent(new PopStateEvent("popstate"));
}

export function usePath(): string {
  const [path, setPath] = useState(window.location.pathname);
  useEffect(() => {
    const update = () => setPath(window.location.pathname);
    window.addEventListener("popstate", update);
    return () => window.removeEventListener("popstate", update);
  }, []);
  return path;
}

export type Route =
  | { page: "home" }
  | { page: "login" }
  | { page: "annotate"; projectId: number }
  | { page: "history"; projectId: number }
  | { page: "admin"; projectId: number | null; tab: string; item: number | null }
  | { page: "not-found" };

export function parseRoute(path: string): Route {
  const parts = path.replace(/^\/(app\/?)?/, "").split("/").filter(Boolean);
  if (parts.length === 0) return { page: "home" };
  if (parts[0] === "login") return { page: "login" };
  if (parts[0] === "annotate" && isId(parts[1])) {
    if (parts[2] === "history") return { page: "history", projectId: Number(parts[1]) };
    return { page: "annotate", projectId: Number(parts[1]) };
  }
  if (parts[0] === "admin") {
    const id = isId(parts[1]) ? Number(parts[1]) : null;
    const item = isId(parts[3]) ? Number(parts[3]) : null;
    return { page: "admin", projectId: id, tab: parts[2] ?? "overview", item };
  }
  return { page: "not-found" };
}

function isId(part: string | undefined): boolean {
  return /^\d+$/.test(part ?? "");
}
