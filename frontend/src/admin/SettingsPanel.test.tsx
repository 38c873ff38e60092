import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { api } from "../api/client";
import { SettingsPanel, overridesOf } from "./SettingsPanel";

vi.mock("../api/client", async (original) => ({
  ...(await original<typeof import("../api/client")>()),
  api: { GET: vi.fn(), PUT: vi.fn() },
}));

const DEFAULTS = {
  dpo: { beta: 0.1, loss_type: "sigmoid", max_steps: null, lora: { r: 16, alpha: 32 } },
  reward: { use_lora: true, epochs: 1.0 },
  policy_data: "round",
};
const view = (values: object, overrides: object = {}) => ({
  data: { values, overrides, defaults: DEFAULTS },
  error: undefined,
  response: new Response(null, { status: 200 }),
});

describe("SettingsPanel", () => {
  it("shows each default and sends only what differs from it", async () => {
    vi.mocked(api.GET).mockResolvedValueOnce(view(DEFAULTS) as never);
    const put = vi.mocked(api.PUT);
    put.mockResolvedValueOnce(
      view({ ...DEFAULTS, dpo: { ...DEFAULTS.dpo, beta: 0.3 } }, { dpo: { beta: 0.3 } }) as never,
    );
    const user = userEvent.setup();
    render(<SettingsPanel projectId={7} />);
    const beta = await screen.findByRole("textbox", { name: "beta" });
    expect(beta.parentElement).toHaveTextContent("default 0.1");
    await user.clear(beta);
    await user.type(beta, "0.3");
    await user.tab();
    await user.click(screen.getByRole("button", { name: "Save" }));

    const [path, options] = put.mock.calls[0] as [string, { body: unknown }];
    expect(path).toBe("/api/projects/{project_id}/training-settings/");
    expect(options.body).toEqual({ dpo: { beta: 0.3 } });
    expect(await screen.findByRole("status")).toHaveTextContent("Saved");
  });

  it("shows the server's message naming a refused field", async () => {
    vi.mocked(api.GET).mockResolvedValueOnce(view(DEFAULTS) as never);
    vi.mocked(api.PUT).mockResolvedValueOnce({
      data: undefined,
      error: { error: "invalid_settings", detail: "training_settings.dpo.beta: expected float." },
      response: new Response(null, { status: 400 }),
    } as never);
    const user = userEvent.setup();
    render(<SettingsPanel projectId={7} />);
    const beta = await screen.findByRole("textbox", { name: "beta" });
    await user.clear(beta);
    await user.type(beta, "high");
    await user.tab();
    await user.click(screen.getByRole("button", { name: "Save" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("training_settings.dpo.beta");
  });
});

describe("overridesOf", () => {
  it("keeps changed fields per section, whole values for nested ones, nothing for defaults", () => {
    const values = {
      ...DEFAULTS,
      dpo: { ...DEFAULTS.dpo, lora: { r: 8, alpha: 32 }, max_steps: 40 },
      policy_data: "all",
    };
    expect(overridesOf(values, DEFAULTS)).toEqual({
      dpo: { lora: { r: 8, alpha: 32 }, max_steps: 40 },
      policy_data: "all",
    });
    expect(overridesOf(DEFAULTS, DEFAULTS)).toEqual({});
  });
});
