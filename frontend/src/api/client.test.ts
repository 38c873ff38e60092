import { describe, expect, it } from "vitest";
import { errorText } from "./client";

describe("errorText", () => {
  it("reads field errors instead of printing [object Object]", () => {
    const body = {
      error: "invalid",
      detail: { username: ["This field is required."], password: ["This field is required."] },
    };
    const text = errorText(body);
    expect(text).toBe("username: This field is required.; password: This field is required.");
    expect(text).not.toContain("[object Object]");
  });

  it("keeps a plain detail and the API's conflict message", () => {
    expect(errorText({ error: "conflict", detail: "You already judged this pair: left." })).toBe(
      "You already judged this pair: left.",
    );
  });

  it("says something for an empty or odd body", () => {
    expect(errorText(null)).toBe("Something went wrong.");
    expect(errorText({ error: "invalid" })).toBe("Something went wrong.");
    expect(errorText({ error: "invalid", detail: { non_field_errors: ["Wrong password."] } })).toBe(
      "Wrong password.",
    );
  });
});
