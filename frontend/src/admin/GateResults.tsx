// Gate results come as {passed, gates: {name: {value, threshold, passed}}}; render any gate names.
import { number } from "./format";

interface Gate {
  value?: unknown;
  threshold?: unknown;
  passed?: unknown;
  n?: unknown;
  low?: unknown;
  high?: unknown;
  conclusive?: unknown;
}

export function gatesOf(results: unknown): { passed: boolean | null; gates: [string, Gate][] } {
  if (!results || typeof results !== "object") return { passed: null, gates: [] };
  const body = results as { passed?: unknown; gates?: unknown };
  const gates =
    body.gates && typeof body.gates === "object"
      ? Object.entries(body.gates as Record<string, Gate>)
      : [];
  return { passed: typeof body.passed === "boolean" ? body.passed : null, gates };
}

export function GateResults({ results }: { results: unknown }) {
  const { passed, gates } = gatesOf(results);
  if (passed === null && gates.length === 0) return <span className="muted">not evaluated</span>;
  return (
    <div className="gates">
      {passed !== null && (
        <span className={`badge ${passed ? "ok" : "bad"}`}>{passed ? "passed" : "failed"}</span>
      )}
      <ul>
        {gates.map(([name, gate]) => (
          <li key={name} className={gate.passed === false ? "gate-failed" : "gate-passed"}>
            <span className="gate-name">{name.replace(/_/g, " ")}</span>{" "}
            {number(gate.value)}
            {gate.threshold !== undefined && <span className="muted"> / {number(gate.threshold)}</span>}
            {gate.passed === true ? " ✓" : gate.passed === false ? " ✗" : ""}
            {typeof gate.n === "number" && (
              <span className="muted gate-ci">
                {" "}
                n={gate.n}, 95% CI {number(gate.low)}–{number(gate.high)}
                {gate.conclusive === false && (
                  <span className="badge warn"> not enough data</span>
                )}
              </span>
            )}
          </li>
        ))}
      </ul>
    </div>
  );
}
