import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { App } from "./App";
import { api, SIGNED_OUT_EVENT } from "./api/client";

vi.mock("./api/client", async (original) => ({
  ...(await original<typeof import("./api/client")>()),
  api: { GET: vi.fn(), POST: vi.fn() },
}));

const alice = {
  id: 2,
  username: "alice",
  is_staff: false,
  projects: [{ id: 1, name: "Demo", slug: "demo", role: "annotator", paused: false }],
};

describe("App", () => {
  beforeEach(() => {
    vi.mocked(api.GET).mockReset();
    vi.mocked(api.POST).mockReset();
  });

  it("signs in through the form and lists the annotator's projects", async () => {
    window.history.pushState({}, "", "/app/");
    vi.mocked(api.GET).mockResolvedValue({ data: undefined } as never);
    vi.mocked(api.POST).mockResolvedValue({ data: alice } as never);
    const user = userEvent.setup();
    render(<App />);
    await user.type(await screen.findByLabelText("Username"), "alice");
    await user.type(screen.getByLabelText("Password"), "secret{Enter}");
    expect(await screen.findByRole("link", { name: "Demo" })).toHaveAttribute(
      "href",
      "/app/annotate/1",
    );
    expect(api.POST).toHaveBeenCalledWith("/api/web/login/", {
      body: { username: "alice", password: "secret" },
    });
  });

  it("keeps admin pages from annotators and returns to sign-in when the session ends", async () => {
    window.history.pushState({}, "", "/app/admin/1/training");
    vi.mocked(api.GET).mockResolvedValue({ data: alice } as never);
    render(<App />);
    expect(await screen.findByRole("alert")).toHaveTextContent("for admins only");
    expect(screen.queryByText("Training runs")).toBeNull();
    window.dispatchEvent(new Event(SIGNED_OUT_EVENT));
    expect(await screen.findByRole("button", { name: "Sign in" })).toBeInTheDocument();
  });
});
