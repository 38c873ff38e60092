// Small pure formatters shared by the dashboard panels.

export function percent(value: number | null | undefined, digits = 0): string {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(digits)}%`;
}

export function number(value: unknown, digits = 3): string {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

export function duration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

/** Time left at the pace so far, from the run's start, its step and its total. */
export function etaSeconds(
  run: { step?: number; total_steps?: number | null; started_at?: string | null },
  now: number,
): number | null {
  const step = run.step ?? 0;
  if (!run.started_at || !run.total_steps || step <= 0) return null;
  const elapsed = (now - Date.parse(run.started_at)) / 1000;
  return (elapsed / step) * Math.max(run.total_steps - step, 0);
}

export function when(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleString() : "–";
}
