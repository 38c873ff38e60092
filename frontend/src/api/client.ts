// The typed API client: paths and shapes come from the generated OpenAPI schema (schema.d.ts).
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type LeasedPair = Schemas["LeasedPair"];
export type Me = Schemas["Me"];

export function cookie(name: string): string | null {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

// Django's session auth wants the CSRF token on every unsafe request.
const csrf: Middleware = {
  onRequest({ request }) {
    if (!["GET", "HEAD", "OPTIONS"].includes(request.method)) {
      request.headers.set("X-CSRFToken", cookie("csrftoken") ?? "");
    }
    return request;
  },
};

/** Fired when the API says the session is gone (expired, or signed out in another tab). */
export const SIGNED_OUT_EVENT = "tandem:signed-out";

const signedOut: Middleware = {
  onResponse({ response }) {
    if (response.status === 401) window.dispatchEvent(new Event(SIGNED_OUT_EVENT));
    return response;
  },
};

export const api = createClient<paths>({ baseUrl: "", credentials: "same-origin" });
api.use(csrf, signedOut);

/** The rows of a list response: a page ({count, results}) or a plain array. */
export function items<T>(data: { results: T[] } | T[] | undefined): T[] {
  if (data === undefined) return [];
  return Array.isArray(data) ? data : data.results;
}

/** The human-readable message of an API error body ({error, detail}) or a validation error. */
/** A field error, a list of them or a nested object, as one line a person can read. */
function flattened(value: unknown): string {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) return value.map(flattened).join(" ");
  if (value && typeof value === "object") {
    return Object.entries(value)
      .map(([key, inner]) =>
        key === "non_field_errors" ? flattened(inner) : `${key}: ${flattened(inner)}`,
      )
      .join("; ");
  }
  return String(value);
}

export function errorText(error: unknown): string {
  if (!error) return "Something went wrong.";
  if (typeof error === "string") return error;
  const body = error as Record<string, unknown>;
  if (typeof body.detail === "string") return body.detail;
  // {"error": "invalid", "detail": {"username": ["This field is required."]}}: the fields speak.
  if (body.detail && typeof body.detail === "object") return flattened(body.detail);
  const rest = Object.fromEntries(Object.entries(body).filter(([key]) => key !== "error"));
  return flattened(rest) || "Something went wrong.";
}
