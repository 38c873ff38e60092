import { render, screen } from "@testing-library/react";
import { PromptView, turnsOf } from "./Prompt";

describe("PromptView", () => {
  it("renders a chat prompt as a transcript of turns", () => {
    render(
      <PromptView
        prompt={{
          text: null,
          messages: [
            { role: "user", content: "Hello" },
            { role: "assistant", content: "Hi, how can I help?" },
            { role: "user", content: "Tell me a joke" },
          ],
        }}
      />,
    );
    const turns = screen.getAllByRole("listitem");
    expect(turns).toHaveLength(3);
    expect(turns[1]).toHaveTextContent("assistant");
    expect(turns[2]).toHaveTextContent("Tell me a joke");
  });

  it("falls back to plain text", () => {
    render(<PromptView prompt={{ text: "Just a question", messages: null }} />);
    expect(screen.getByText("Just a question")).toBeInTheDocument();
    expect(turnsOf("not a list")).toBeNull();
  });
});
