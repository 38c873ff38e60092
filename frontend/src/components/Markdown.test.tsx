import { render } from "@testing-library/react";
import { Markdown, safeUrl } from "./Markdown";

describe("Markdown", () => {
  it("shows raw HTML as text and creates no script, image or handler", () => {
    const hostile =
      'Hi <script>window.hacked = 1</script> <img src=x onerror="window.hacked = 2"> ' +
      "[click](javascript:alert(1))";
    const { container } = render(<Markdown text={hostile} />);
    expect(container.querySelector("script")).toBeNull();
    expect(container.querySelector("img")).toBeNull();
    expect(container.querySelector("[onerror]")).toBeNull();
    expect(container.textContent).toContain("<script>window.hacked = 1</script>");
    const link = container.querySelector("a");
    expect(link?.getAttribute("href") ?? "").not.toMatch(/javascript/i);
  });

  it("highlights fenced code", () => {
    const { container } = render(<Markdown text={"```python\nprint('x')\n```"} />);
    expect(container.querySelector("code.hljs")).not.toBeNull();
    expect(container.querySelector(".hljs-built_in, .hljs-string")).not.toBeNull();
  });

  it("opens safe links in a new tab without the opener", () => {
    const { container } = render(<Markdown text="[docs](https://example.org)" />);
    const link = container.querySelector("a")!;
    expect(link.getAttribute("href")).toBe("https://example.org");
    expect(link.getAttribute("rel")).toContain("noopener");
  });
});

describe("safeUrl", () => {
  it("keeps http(s), mailto and anchors, drops the rest", () => {
    expect(safeUrl("https://a.b/c")).toBe("https://a.b/c");
    expect(safeUrl("mailto:x@y.z")).toBe("mailto:x@y.z");
    expect(safeUrl("#top")).toBe("#top");
    expect(safeUrl("javascript:alert(1)")).toBe("");
    expect(safeUrl(" JaVaScRiPt:alert(1)")).toBe("");
    expect(safeUrl("data:text/html,<b>x</b>")).toBe("");
    expect(safeUrl("/api/projects/")).toBe("");
  });
});
