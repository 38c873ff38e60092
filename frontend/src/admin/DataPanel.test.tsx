import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { api } from "../api/client";
import { DataPanel } from "./DataPanel";

vi.mock("../api/client", async (original) => ({
  ...(await original<typeof import("../api/client")>()),
  api: { POST: vi.fn() },
}));

describe("DataPanel prompt upload", () => {
  it("sends the file as multipart and lists each bad row with its problem", async () => {
    const post = vi.mocked(api.POST);
    post.mockResolvedValueOnce({
      data: undefined,
      error: {
        error: "invalid",
        detail: "2 of 5 prompts are invalid; nothing was stored.",
        rows: [
          { index: 1, error: "text is empty" },
          { index: 3, error: "longer than 8000 characters" },
        ],
      },
      response: new Response(null, { status: 400 }),
    } as never);
    const user = userEvent.setup();
    const { container } = render(<DataPanel projectId={4} />);
    const input = container.querySelector('input[name="prompts"]') as HTMLInputElement;
    await user.upload(input, new File(['{"text": "ok"}\n{"text": ""}\n'], "p.jsonl"));
    await user.click(screen.getByRole("button", { name: "Upload" }));

    const [path, options] = post.mock.calls[0] as [string, { bodySerializer: () => FormData }];
    expect(path).toBe("/api/projects/{project_id}/prompts/upload/");
    const form = options.bodySerializer();
    expect((form.get("file") as File).name).toBe("p.jsonl");
    expect(form.get("all_or_nothing")).toBe("true");

    const table = await screen.findByRole("table", { name: "Row errors" });
    expect(table).toHaveTextContent("2text is empty");
    expect(table).toHaveTextContent("4longer than 8000 characters");
    expect(screen.getByTestId("upload-result")).toHaveTextContent("2 rows with errors");
    expect(screen.getByRole("alert")).toHaveTextContent("nothing was stored");
  });

  it("links the three exports", () => {
    render(<DataPanel projectId={4} />);
    const hrefs = screen.getAllByRole("link").map((a) => a.getAttribute("href"));
    expect(hrefs).toEqual([
      "/api/projects/4/export/trl/",
      "/api/projects/4/export/judgments.jsonl",
      "/api/projects/4/export/judgments.csv",
    ]);
  });
});
