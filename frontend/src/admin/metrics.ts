// A version's stored metrics (flat: train_loss, eval_accuracy, heldout_accuracy, seconds, ...)
// as an admin reads them: the few that matter, named in words, the headline first.

export interface NamedMetric {
  key: string;
  label: string;
  value: number;
  kind: "fraction" | "number" | "seconds";
  detail?: string;
}

interface Known {
  key: string;
  label: string;
  kind: NamedMetric["kind"];
  detailKey?: string;
  detail?: (n: number) => string;
}

const REWARD: Known[] = [
  {
    key: "heldout_accuracy",
    label: "Held-out accuracy",
    kind: "fraction",
    detailKey: "heldout_pairs",
    detail: (n) => `on ${n} human pairs no training saw`,
  },
  { key: "eval_accuracy", label: "Accuracy on its eval slice", kind: "fraction" },
  { key: "eval_margin", label: "Reward margin (eval)", kind: "number" },
  { key: "train_loss", label: "Final training loss", kind: "number" },
  { key: "seconds", label: "Training time", kind: "seconds" },
];

const POLICY: Known[] = [
  { key: "eval_rewards/accuracy", label: "Implicit-reward accuracy (eval)", kind: "fraction" },
  { key: "train_rewards/accuracy", label: "Implicit-reward accuracy (train)", kind: "fraction" },
  { key: "eval_rewards/margin", label: "Implicit-reward margin (eval)", kind: "number" },
  { key: "train_loss", label: "Final training loss", kind: "number" },
  { key: "train_reward", label: "Reward (last rollout)", kind: "number" },
  { key: "train_kl", label: "KL to the reference (last rollout)", kind: "number" },
  { key: "seconds", label: "Training time", kind: "seconds" },
];

function numeric(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value);
}

/** The named metrics of a version that has them, in reading order. */
export function namedMetrics(kind: string, metrics: unknown): NamedMetric[] {
  if (!metrics || typeof metrics !== "object") return [];
  const values = metrics as Record<string, unknown>;
  const known = kind === "reward" ? REWARD : POLICY;
  const named: NamedMetric[] = [];
  for (const spec of known) {
    const value = values[spec.key];
    if (!numeric(value)) continue;
    const extra = spec.detailKey ? values[spec.detailKey] : undefined;
    named.push({
      key: spec.key,
      label: spec.label,
      value,
      kind: spec.kind,
      detail: spec.detail && numeric(extra) ? spec.detail(extra) : undefined,
    });
  }
  return named;
}

/** Every numeric metric not named above (gate figures are shown with the gates). */
export function otherMetrics(kind: string, metrics: unknown): [string, number][] {
  if (!metrics || typeof metrics !== "object") return [];
  const shown = new Set(namedMetrics(kind, metrics).map((m) => m.key));
  return Object.entries(metrics as Record<string, unknown>)
    .filter(([key, value]) => numeric(value) && !shown.has(key) && !key.startsWith("gate_"))
    .map(([key, value]) => [key, value as number]);
}
