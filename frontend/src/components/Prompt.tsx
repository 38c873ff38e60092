import type { Schemas } from "../api/client";
import { Markdown } from "./Markdown";

interface Turn {
  role: string;
  content: string;
}

/** Chat turns when the prompt has them; anything malformed is shown as plain text. */
export function turnsOf(messages: unknown): Turn[] | null {
  if (!Array.isArray(messages) || messages.length === 0) return null;
  return messages.map((m) => {
    const turn = (m ?? {}) as Record<string, unknown>;
    return { role: String(turn.role ?? "user"), content: String(turn.content ?? "") };
  });
}

export function PromptView({ prompt }: { prompt: Schemas["PromptView"] }) {
  const turns = turnsOf(prompt.messages);
  if (turns) {
    return (
      <ol className="transcript" aria-label="Conversation">
        {turns.map((turn, i) => (
          <li key={i} className={`turn turn-${turn.role === "user" ? "user" : "other"}`}>
            <div className="turn-role">{turn.role}</div>
            <Markdown text={turn.content} />
          </li>
        ))}
      </ol>
    );
  }
  return (
    <div className="prompt-text">
      <Markdown text={prompt.text ?? ""} />
    </div>
  );
}
