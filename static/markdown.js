/*
 * Model answers as markdown, safely and while they stream.
 *
 * Parsing is marked's and sanitizing DOMPurify's (both vendored, see
 * scripts/vendor.sh); this module decides what model text may become. Raw
 * HTML in an answer is shown as the text it is, never parsed; images become
 * links, so an answer cannot make the browser fetch a URL by itself; every
 * link opens in a new tab without access to this page. DOMPurify runs on
 * top of that, so a parser bug still cannot produce a script or a
 * `javascript:` link.
 *
 * An answer is re-rendered each time it grows, and a reader may be
 * selecting text in it meanwhile. So the new markup is laid onto the old
 * DOM rather than replacing it: blocks that did not change are left alone,
 * and in the one that grows, text nodes are extended in place.
 */
import { Marked } from "/vendor/marked.esm.js";
import DOMPurify from "/vendor/purify.es.mjs";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const marked = new Marked({
  gfm: true,
  renderer: {
    html: ({ text, block }) => (block ? `<p class="raw-html">${escapeHtml(text)}</p>` : escapeHtml(text)),
    image: ({ href, text }) =>
      href ? `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>` : escapeHtml(text),
    code({ text, lang }) {
      const language = (lang ?? "").trim().split(/\s+/)[0];
      const label = language || "text";
      const className = language ? ` class="language-${escapeHtml(language)}"` : "";
      return (
        `<div class="code-block" data-testid="code-block">` +
        `<div class="code-head"><span class="code-lang" data-testid="code-lang">${escapeHtml(label)}</span>` +
        `<button type="button" class="code-copy" data-action="copy-code" data-testid="copy-code" aria-label="Copy code">Copy</button></div>` +
        `<pre><code${className}>${escapeHtml(text)}</code></pre></div>`
      );
    },
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Elements whose whitespace-only children are only marked's line breaks between blocks. */
const BLOCK_PARENTS = new Set(["UL", "OL", "TABLE", "THEAD", "TBODY", "TR", "BLOCKQUOTE"]);

/** Renders `source` as markdown into `container`, reusing what is already there. */
export function renderMarkdown(container, source) {
  const fragment = DOMPurify.sanitize(marked.parse(source), { RETURN_DOM_FRAGMENT: true });
  dropLayoutWhitespace(fragment, true);
  morphChildren(container, [...fragment.childNodes]);
}

function dropLayoutWhitespace(parent, isRoot) {
  for (const child of [...parent.childNodes]) {
    if (child.nodeType === Node.TEXT_NODE) {
      if ((isRoot || BLOCK_PARENTS.has(parent.nodeName)) && !child.data.trim()) child.remove();
    } else if (child.nodeName !== "PRE") {
      dropLayoutWhitespace(child, false);
    }
  }
}

function morphChildren(parent, next) {
  const current = [...parent.childNodes];
  next.forEach((node, i) => {
    if (i < current.length) morph(current[i], node);
    else parent.append(node);
  });
  for (const extra of current.slice(next.length)) extra.remove();
}

function morph(current, next) {
  if (current.nodeType !== next.nodeType || current.nodeName !== next.nodeName) {
    current.replaceWith(next);
  } else if (current.nodeType === Node.TEXT_NODE) {
    // Appending keeps a selection inside the node; replacing the data would collapse it.
    if (next.data.startsWith(current.data)) {
      if (next.data.length > current.data.length) current.appendData(next.data.slice(current.data.length));
    } else {
      current.data = next.data;
    }
  } else if (current.nodeType === Node.ELEMENT_NODE) {
    for (const { name } of [...current.attributes]) {
      if (!next.hasAttribute(name)) current.removeAttribute(name);
    }
    for (const { name, value } of next.attributes) {
      if (current.getAttribute(name) !== value) current.setAttribute(name, value);
    }
    morphChildren(current, [...next.childNodes]);
  }
}
