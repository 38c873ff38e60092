// Metric points ({step, split, name, value}) into chart rows, one row per step.
import type { Schemas } from "../api/client";

export interface Series {
  rows: Record<string, number>[];
  lossKeys: string[];
  accuracyKeys: string[];
}

export function seriesFrom(points: Schemas["MetricPoint"][]): Series {
  const byStep = new Map<number, Record<string, number>>();
  const keys = new Set<string>();
  for (const point of points) {
    const key = `${point.split ?? "train"} ${point.name}`;
    keys.add(key);
    const row = byStep.get(point.step) ?? { step: point.step };
    row[key] = point.value;
    byStep.set(point.step, row);
  }
  const sorted = [...keys].sort();
  return {
    rows: [...byStep.values()].sort((a, b) => a.step - b.step),
    lossKeys: sorted.filter((k) => k.includes("loss")),
    accuracyKeys: sorted.filter((k) => k.includes("acc") || k.includes("win")),
  };
}
