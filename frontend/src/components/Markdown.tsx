// Model outputs are untrusted: Markdown only. No rehype-raw, so HTML in an answer shows as text,
// and links keep only safe schemes.
import ReactMarkdown, { type Components } from "react-markdown";
import rehypeHighlight from "rehype-highlight";
import remarkGfm from "remark-gfm";

const SAFE_PROTOCOLS = ["http:", "https:", "mailto:"];

/** Keep http(s)/mailto links and in-page anchors; everything else (javascript:, data:, ...) goes. */
export function safeUrl(url: string): string {
  const trimmed = url.trim();
  if (trimmed.startsWith("#")) return trimmed;
  try {
    const parsed = new URL(trimmed);
    return SAFE_PROTOCOLS.includes(parsed.protocol) ? trimmed : "";
  } catch {
    return ""; // relative paths would point into Tandem itself: drop them too
  }
}

const components: Components = {
  a: ({ href, children }) =>
    href ? (
      <a href={href} target="_blank" rel="noopener noreferrer nofollow">
        {children}
      </a>
    ) : (
      <span className="dead-link">{children}</span>
    ),
  // An image in an answer could track the reader; show its alt text and address instead.
  img: ({ alt, src }) => (
    <span className="image-placeholder">
      [image{alt ? `: ${alt}` : ""}
      {src ? ` (${src})` : ""}]
    </span>
  ),
};

export function Markdown({ text }: { text: string }) {
  return (
    <div className="markdown">
      <ReactMarkdown
        remarkPlugins={[remarkGfm]}
        rehypePlugins={[[rehypeHighlight, { detect: true }]]}
        urlTransform={safeUrl}
        components={components}
      >
        {text}
      </ReactMarkdown>
    </div>
  );
}
