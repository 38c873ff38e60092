// The real PairSource: the annotation API plus the web UI's lease-ahead endpoint.
import { api, cookie, errorText, type LeasedPair } from "../api/client";
import type { Outcome, PairSource, Verdict } from "./queue";

function failure(error: unknown, response: Response): Outcome {
  const body = (error ?? {}) as { lease_expired?: boolean };
  return {
    ok: false,
    expired: response.status === 409 && body.lease_expired === true,
    message: errorText(error),
  };
}

export function apiSource(projectId: number): PairSource {
  const path = { params: { path: { project_id: projectId } } };
  return {
    async next(): Promise<LeasedPair | null> {
      const { data, error } = await api.POST("/api/projects/{project_id}/comparisons/next/", path);
      if (error) throw new Error(errorText(error));
      return data ?? null; // 204: nothing left
    },
    async ahead(): Promise<LeasedPair | null> {
      const { data } = await api.POST("/api/web/projects/{project_id}/lease-ahead/", path);
      return data ?? null; // prefetching is a nicety: a failure just means no prefetch
    },
    async submit(assignmentId: number, verdict: Verdict): Promise<Outcome> {
      const { error, response } = await api.POST("/api/assignments/{assignment_id}/submit/", {
        params: { path: { assignment_id: assignmentId } },
        body: verdict,
      });
      return error ? failure(error, response) : { ok: true };
    },
    async skip(assignmentId: number): Promise<Outcome> {
      const { error, response } = await api.POST("/api/assignments/{assignment_id}/skip/", {
        params: { path: { assignment_id: assignmentId } },
      });
      return error ? failure(error, response) : { ok: true };
    },
    release(assignmentId: number): void {
      // keepalive lets the request outlive the closing page.
      void fetch(`/api/assignments/${assignmentId}/release/`, {
        method: "POST",
        keepalive: true,
        credentials: "same-origin",
        headers: { "X-CSRFToken": cookie("csrftoken") ?? "" },
      });
    },
  };
}
