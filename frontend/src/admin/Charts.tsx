import {
  CartesianGrid,
  ErrorBar,
  Legend,
  Line,
  LineChart,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from "recharts";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
// A series keeps its colour on every chart: train is blue, eval red, wherever they appear.
const SPLIT_COLORS: Record<string, string> = { train: COLORS[0], eval: COLORS[1] };

/** A colour per series key, the same on every chart: by its split where it names one
 *  ("train loss"), else by a hash of the key. */
export function colorFor(key: string): string {
  const split = SPLIT_COLORS[key.split(" ")[0]];
  if (split) return split;
  let hash = 0;
  for (const char of key) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return COLORS[2 + (hash % (COLORS.length - 2))];
}

/** The colours of one chart's series: each key's own (colorFor), except that a key whose colour
 *  an earlier series of the same chart took gets the next free one, so no two lines match. */
export function chartColors(keys: string[]): string[] {
  const taken = new Set<string>();
  return keys.map((key) => {
    let color = colorFor(key);
    for (let i = 0; taken.has(color) && i < COLORS.length; i++) {
      color = COLORS[(COLORS.indexOf(color) + 1) % COLORS.length];
    }
    taken.add(color);
    return color;
  });
}

/** Ticks a quarter apart across a fixed domain ([-0.25, 1] gives -0.25, 0, ..., 1). */
export function quarterTicks([low, high]: [number, number]): number[] {
  const ticks = [];
  for (let tick = Math.ceil(low * 4) / 4; tick <= high + 1e-9; tick += 0.25) {
    ticks.push(Math.round(tick * 100) / 100);
  }
  return ticks;
}

/** Enough decimals that neighbouring ticks of this data never print the same label. */
export function tickDecimals(rows: Record<string, unknown>[], keys: string[]): number {
  const values = rows.flatMap((row) =>
    keys.map((k) => row[k]).filter((v): v is number => typeof v === "number" && Number.isFinite(v)),
  );
  if (values.length === 0) return 2;
  const span = Math.max(...values) - Math.min(...values);
  if (span === 0) return 2;
  // Five ticks or so across the span: each step is about span / 4.
  return Math.min(6, Math.max(0, Math.ceil(-Math.log10(span / 4)) + 1));
}

export interface LineSpec {
  key: string;
  label?: string;
  // A row key holding [value - low, high - value]: the 95% interval drawn as error bars.
  errorKey?: string;
}

export function LinesChart({
  title,
  rows,
  xKey,
  lines,
  domain,
}: {
  title: string;
  rows: Record<string, number | string | null | number[]>[];
  xKey: string;
  lines: LineSpec[];
  domain?: [number, number];
}) {
  const decimals = domain ? 2 : tickDecimals(rows, lines.map((line) => line.key));
  const colors = chartColors(lines.map((line) => line.key));
  return (
    <figure className="chart" aria-label={title}>
      <figcaption>{title}</figcaption>
      {rows.length === 0 || lines.length === 0 ? (
        <p className="muted">No data yet.</p>
      ) : (
        <ResponsiveContainer width="100%" height={220}>
          <LineChart data={rows} margin={{ top: 8, right: 16, bottom: 4, left: 0 }}>
            <CartesianGrid strokeDasharray="3 3" />
            <XAxis dataKey={xKey} />
            <YAxis
              domain={domain ?? ["auto", "auto"]}
              ticks={domain ? quarterTicks(domain) : undefined}
              width={56}
              tickFormatter={(v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(decimals))}
            />
            <Tooltip />
            <Legend />
            {lines.map((line, i) => (
              <Line
                key={line.key}
                type="monotone"
                dataKey={line.key}
                name={line.label ?? line.key}
                stroke={colors[i]}
                dot={rows.length < 30}
                connectNulls
                isAnimationActive={false}
              >
                {line.errorKey && (
                  <ErrorBar dataKey={line.errorKey} width={6} stroke={colors[i]} />
                )}
              </Line>
            ))}
          </LineChart>
        </ResponsiveContainer>
      )}
    </figure>
  );
}
