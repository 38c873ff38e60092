import {
  CartesianGrid,
  Legend,
  Line,
  LineChart,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from "recharts";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

export interface LineSpec {
  key: string;
  label?: string;
}

export function LinesChart({
  title,
  rows,
  xKey,
  lines,
  domain,
}: {
  title: string;
  rows: Record<string, number | string | null>[];
  xKey: string;
  lines: LineSpec[];
  domain?: [number, number];
}) {
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
              width={56}
              tickFormatter={(v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(2))}
            />
            <Tooltip />
            <Legend />
            {lines.map((line, i) => (
              <Line
                key={line.key}
                type="monotone"
                dataKey={line.key}
                name={line.label ?? line.key}
                stroke={COLORS[i % COLORS.length]}
                dot={rows.length < 30}
                connectNulls
                isAnimationActive={false}
              />
            ))}
          </LineChart>
        </ResponsiveContainer>
      )}
    </figure>
  );
}
