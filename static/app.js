/*
 * The demo chat page's behaviour: conversations and their turns, the
 * messages on screen, the sidebar, settings and the composer. Each turn
 * sends the whole conversation to POST /api/chat through a Generation
 * (generation.js); model text becomes DOM only through the sanitizing
 * markdown renderer (markdown.js); everything is remembered by the Store
 * (store.js).
 */
import { Generation } from "/generation.js";
import { renderMarkdown } from "/markdown.js";
import { Store } from "/store.js";

/** Distance from the end of the conversation that still counts as "at the end". */
const AT_END_PX = 4;
const TITLE_LENGTH = 60;
const THEMES = ["system", "light", "dark"];
const THEME_NAMES = { system: "System", light: "Light", dark: "Dark" };
/** How long a first click on Delete waits for the second. */
const CONFIRM_MS = 3000;
const COMPOSER_HINT = "Enter to send · Shift+Enter for a new line";

const $ = (id) => document.getElementById(id);
const ui = {
  prompt: $("prompt"),
  composer: $("composer"),
  send: $("send"),
  stop: $("stop"),
  hint: $("composer-hint"),
  newChat: $("new-chat"),
  model: $("model"),
  theme: $("theme"),
  themeLabel: $("theme-label"),
  system: $("system"),
  temperature: $("temperature"),
  maxTokens: $("max-tokens"),
  apiKey: $("api-key"),
  settings: $("settings"),
  settingsToggle: $("settings-toggle"),
  sidebarToggle: $("sidebar-toggle"),
  scrim: $("scrim"),
  list: $("conversation-list"),
  banner: $("demo-banner"),
  scroller: $("conversation"),
  empty: $("empty-state"),
  messages: $("messages"),
  jump: $("jump-latest"),
  template: $("assistant-template"),
  keyDialog: $("key-dialog"),
  keyForm: $("key-form"),
  keyInput: $("key-input"),
  keyReason: $("key-reason"),
  keyCancel: $("key-cancel"),
};

const store = new Store();
/** The generation being streamed, if any; there is one at a time. */
let current = null;
/** Set while the page goes away: a fetch it aborts is not a failure to record. */
let leaving = false;
addEventListener("pagehide", () => (leaving = true));
addEventListener("pageshow", () => (leaving = false));

window.tokenrelayDebug = { lastRequestBody: null };

// ---- Turns: sending, regenerating, editing ----

function send(text) {
  text = text.trim();
  if (!text || current) return;
  const conversation = store.open;
  conversation.messages.push({ role: "user", content: text });
  if (!conversation.title) conversation.title = text.slice(0, TITLE_LENGTH);
  ui.prompt.value = "";
  updateComposer();
  renderConversation();
  generate(conversation);
}

/** Answers the last user message of the open conversation again (Regenerate, Retry). */
function regenerate() {
  const conversation = store.open;
  if (current || conversation.messages.at(-1)?.role !== "assistant") return;
  conversation.messages.pop();
  renderConversation();
  generate(conversation);
}

/** Replaces the user message at `index` and everything after it, then asks again. */
function resend(index, text) {
  const conversation = store.open;
  text = text.trim();
  if (current || !text || conversation.messages[index]?.role !== "user") return;
  conversation.messages.splice(index, Infinity, { role: "user", content: text });
  renderConversation();
  generate(conversation);
}

/** What the model is told of a conversation: failed answers are left out so no turn builds on them. */
function historyOf(conversation) {
  const turns = conversation.messages
    .filter((m) => m.role === "user" || (m.state !== "error" && m.content))
    .map((m) => ({ role: m.role, content: m.content }));
  const system = conversation.system.trim();
  return [...(system ? [{ role: "system", content: system }] : []), ...turns];
}

function requestBody(conversation) {
  const body = { messages: historyOf(conversation) };
  if (ui.model.value) body.model = ui.model.value;
  const { temperature, maxTokens } = store.settings;
  if (temperature !== "") body.temperature = Number(temperature);
  if (maxTokens !== "") body.max_tokens = Number(maxTokens);
  return body;
}

function generate(conversation) {
  const body = requestBody(conversation);
  window.tokenrelayDebug.lastRequestBody = structuredClone(body);
  const message = { role: "assistant", content: "", state: "streaming", reasoning: "", toolCalls: [] };
  conversation.messages.push(message);
  store.touch(conversation, { now: true });
  renderList();
  const generation = new Generation(conversation, message, pageHooks);
  const view = new AssistantView(message);
  appendMessage(view.root);
  generation.attach(view);
  start(generation, () => generation.run(body));
}

/** Makes `generation` the one that streams; `run` drives it. */
function start(generation, run) {
  current = generation;
  setBusy(true);
  run().catch((error) => generation.fail("Something went wrong", error.message));
}

/** What a generation asks of the page. */
const pageHooks = {
  headers: authorized,
  save: (conversation, now) => store.touch(conversation, { now }),
  settled(generation) {
    store.touch(generation.conversation, { now: true });
    if (current !== generation) return;
    current = null;
    setBusy(false);
  },
  unauthorized: (message) => askForKey(message),
  leaving: () => leaving,
};

function authorized(headers) {
  const key = store.apiKey;
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

function setBusy(busy) {
  const hadFocus = document.activeElement === ui.send || document.activeElement === ui.stop;
  document.body.toggleAttribute("data-busy", busy);
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  updateComposer();
  if (hadFocus) (busy ? ui.stop : ui.prompt).focus();
}

/** The send button is only enabled with something to send, and the hint says why not. */
function updateComposer() {
  const empty = !ui.prompt.value.trim();
  ui.send.disabled = empty;
  ui.send.setAttribute("aria-disabled", String(empty));
  ui.hint.classList.toggle("blocked", Boolean(current));
  ui.hint.textContent = current
    ? "An answer is still streaming: wait for it, or Stop it, to send the next message."
    : COMPOSER_HINT;
}

// ---- Rendering a conversation ----

/** One assistant message on screen, drawn from its saved form. */
class AssistantView {
  #queued = false;

  constructor(message) {
    this.message = message;
    this.root = ui.template.content.firstElementChild.cloneNode(true);
    this.root.view = this;
    this.body = this.root.querySelector(".message-body");
    this.answer = this.root.querySelector(".answer");
    this.meta = this.root.querySelector(".meta");
    this.thinking = null;
    this.toolCalls = [];
    this.reconnecting = null;
    this.render();
  }

  /** Redraws at the next frame: tokens arrive faster than anyone reads. */
  update() {
    if (this.#queued) return;
    this.#queued = true;
    requestAnimationFrame(() => {
      this.#queued = false;
      this.render();
    });
  }

  render() {
    const m = this.message;
    const streaming = m.state === "streaming";
    this.root.dataset.state = m.state;
    this.root.toggleAttribute("aria-busy", streaming);
    this.answer.classList.toggle("waiting", streaming && !m.content && !m.reasoning && !m.toolCalls.length);
    this.answer.classList.toggle("refusal", m.refusal === true);
    renderMarkdown(this.answer, m.content);
    if (m.reasoning) this.renderThinking();
    m.toolCalls.forEach((call, index) => call && this.renderToolCall(call, index));
    if (m.error && !this.root.querySelector("[data-testid=error]")) this.showError(m.error);
    if (m.model) showText(this.root.querySelector(".meta-model"), m.model);
    for (const [name, testid] of [["ttft", "ttft"], ["tps", "tps"], ["tokens", "token-count"]]) {
      const value = m.figures?.[name];
      if (value !== undefined) this.setFigure(testid, value);
    }
    showText(this.meta.querySelector(".status"), m.status ?? "");
    scrollToEnd();
  }

  renderThinking() {
    const m = this.message;
    if (!this.thinking) {
      const details = element("details", "thinking");
      details.dataset.testid = "thinking";
      details.open = m.state === "streaming";
      const summary = element("summary");
      const text = element("div", "thinking-text");
      details.append(summary, text);
      // Once the reader has opened or closed it, it is theirs: stop folding it automatically.
      summary.addEventListener("click", () => (this.thinking.touched = true));
      this.thinking = { details, summary, text, touched: false };
      this.body.insertBefore(details, this.answer);
    }
    const { details, summary, text, touched } = this.thinking;
    const active = m.state === "streaming" && !m.content;
    if (showText(text, m.reasoning)) text.scrollTop = text.scrollHeight;
    details.classList.toggle("active", active);
    const seconds = m.thoughtFor;
    let label = "Thinking…";
    if (!active) label = seconds == null ? "Thoughts" : `Thought for ${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
    showText(summary, label);
    if (!active && !touched && details.open && m.content) details.open = false;
  }

  renderToolCall(call, index) {
    let view = this.toolCalls[index];
    if (!view) {
      const root = element("div", "tool-call");
      root.dataset.testid = "tool-call";
      root.dataset.index = index;
      const head = element("div", "tool-head");
      const name = element("code", "tool-name");
      const id = element("span", "tool-id");
      head.append(icon("wrench"), element("span", "", "Tool call"), name, id);
      const args = element("pre", "tool-args");
      root.append(head, args);
      this.body.insertBefore(root, this.meta);
      view = this.toolCalls[index] = { name, id, args };
    }
    showText(view.name, call.name);
    showText(view.id, call.id);
    showText(view.args, call.arguments);
  }

  setFigure(testid, value) {
    const figure = this.meta.querySelector(`[data-testid="${testid}"]`);
    figure.textContent = String(value);
    figure.parentElement.removeAttribute("data-empty");
    if (testid === "token-count") figure.nextElementSibling.textContent = value === 1 ? "token" : "tokens";
  }

  setReconnecting(attempt, of) {
    if (attempt === null) {
      this.reconnecting?.remove();
      this.reconnecting = null;
      return;
    }
    if (!this.reconnecting) {
      this.reconnecting = element("div", "reconnecting");
      this.reconnecting.dataset.testid = "reconnecting";
      this.body.insertBefore(this.reconnecting, this.meta);
    }
    this.reconnecting.textContent = `Reconnecting… (attempt ${attempt} of ${of})`;
    scrollToEnd();
  }

  showError({ title, detail, code }) {
    const box = element("div", "error");
    box.dataset.testid = "error";
    box.setAttribute("role", "alert");
    box.append(element("strong", "", title));
    if (detail) box.append(" — ", ...withCode(detail));
    if (code) box.append(" ", element("code", "", code));
    this.body.insertBefore(box, this.meta);
  }

  settle() {
    this.setReconnecting(null);
    this.render();
  }
}

/**
 * Sets `node`'s text, appending when the text only grew so that a reader's
 * selection in it survives; returns whether anything changed.
 */
function showText(node, text) {
  const only = node.childNodes.length === 1 ? node.firstChild : null;
  if (only?.nodeType === Node.TEXT_NODE && text.startsWith(only.data)) {
    if (text.length === only.data.length) return false;
    only.appendData(text.slice(only.data.length));
    return true;
  }
  if (node.textContent === text) return false;
  node.textContent = text;
  return true;
}

/**
 * Server messages quote names in backticks (`model`); they are shown as
 * code, built as text nodes, so the message itself can never be markup.
 */
function withCode(text) {
  return String(text)
    .split(/`([^`]+)`/)
    .map((part, i) => (i % 2 ? element("code", "", part) : document.createTextNode(part)));
}

function userView(message, index) {
  const root = element("div", "message user");
  root.dataset.testid = "message";
  root.dataset.role = "user";
  root.dataset.index = index;
  root.setAttribute("aria-label", "You");
  const bubble = element("div", "bubble", message.content);
  bubble.dataset.testid = "user-text";
  const actions = element("div", "message-actions");
  const edit = element("button", "action", "Edit");
  Object.assign(edit.dataset, { action: "edit", testid: "edit" });
  edit.type = "button";
  actions.append(edit);
  root.append(bubble, actions);
  return root;
}

/** Turns a user message into a box to change it in; sending replaces it and what followed. */
function startEditing(root) {
  if (current || root.querySelector("form")) return;
  const index = Number(root.dataset.index);
  const form = element("form", "edit-form");
  const box = element("textarea", "edit-box");
  box.dataset.testid = "edit-input";
  box.value = store.open.messages[index].content;
  box.setAttribute("aria-label", "Edit your message");
  const cancel = element("button", "plain-button", "Cancel");
  cancel.type = "button";
  const save = element("button", "primary-button", "Send");
  save.type = "submit";
  save.dataset.testid = "edit-send";
  const buttons = element("div", "dialog-actions");
  buttons.append(cancel, save);
  form.append(box, buttons);
  root.classList.add("editing");
  root.append(form);
  box.focus();
  const close = () => (form.remove(), root.classList.remove("editing"));
  cancel.addEventListener("click", close);
  box.addEventListener("keydown", (event) => {
    // Escape here cancels the edit, not the answer streaming elsewhere.
    if (event.key === "Escape") {
      event.stopPropagation();
      close();
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    resend(index, box.value);
  });
}

function renderConversation() {
  const conversation = store.open;
  const views = conversation.messages.map((message, index) => {
    if (message.role === "user") return userView(message, index);
    const view = new AssistantView(message);
    if (current?.message === message) current.attach(view);
    return view.root;
  });
  ui.messages.replaceChildren(...views);
  ui.empty.hidden = views.length > 0;
  ui.system.value = conversation.system;
  pinned = true;
  scrollToEnd();
  renderList();
}

function appendMessage(node) {
  ui.empty.hidden = true;
  ui.messages.append(node);
  pinned = true;
  scrollToEnd();
}

// ---- Actions on messages ----

ui.messages.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const message = button.closest("[data-testid=message]");
  switch (button.dataset.action) {
    case "copy-answer":
      copy(button, message.view.message.content);
      break;
    case "copy-code":
      copy(button, button.closest(".code-block").querySelector("code").textContent);
      break;
    case "regenerate":
      regenerate();
      break;
    case "edit":
      startEditing(message);
      break;
    default:
  }
});

async function copy(button, text) {
  let copied = true;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Outside a secure context (plain http on a LAN address) there is no
    // clipboard API; the old selection-based copy still works there.
    const scratch = element("textarea", "visually-hidden");
    scratch.value = text;
    document.body.append(scratch);
    scratch.select();
    copied = document.execCommand("copy");
    scratch.remove();
  }
  const label = button.textContent;
  button.textContent = copied ? "Copied" : "Copy failed";
  button.disabled = true;
  setTimeout(() => ((button.textContent = label), (button.disabled = false)), 1500);
}

const ICONS = {
  wrench: "M14.7 6.3a4 4 0 0 0-5.4 5.4L3 18l3 3 6.3-6.3a4 4 0 0 0 5.4-5.4l-2.5 2.5-2.4-.6-.6-2.4Z",
  pencil: "M4 20h4L18.5 9.5a2.1 2.1 0 0 0-3-3L5 17v3Z",
  trash: "M4 7h16M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3",
};

/** A decorative icon; the button or label around it carries the words. */
function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

/** An element whose content, if any, is plain text. */
function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- Following the answer ----

// Follow the answer as it grows only while the reader is at the end: any
// scroll up is someone reading, and is never pulled back.
let pinned = true;
let scrollQueued = false;
let lastScrollTop = 0;
ui.scroller.addEventListener("scroll", () => {
  const { scrollHeight, scrollTop, clientHeight } = ui.scroller;
  const atEnd = scrollHeight - scrollTop - clientHeight <= AT_END_PX;
  if (atEnd) pinned = true;
  else if (scrollTop < lastScrollTop) pinned = false;
  lastScrollTop = scrollTop;
  ui.jump.hidden = pinned;
});

function scrollToEnd() {
  if (!pinned || scrollQueued) return;
  scrollQueued = true;
  requestAnimationFrame(() => {
    scrollQueued = false;
    if (pinned) ui.scroller.scrollTop = ui.scroller.scrollHeight;
  });
}

ui.jump.addEventListener("click", () => {
  pinned = true;
  ui.jump.hidden = true;
  scrollToEnd();
  ui.prompt.focus();
});

// ---- Conversations ----

function renderList() {
  const items = [...store.conversations]
    .sort((a, b) => b.updatedAt - a.updatedAt)
    .map((conversation) => {
      const item = element("li", "conversation-item");
      item.dataset.testid = "conversation";
      item.dataset.id = conversation.id;
      const title = conversation.title || "New chat";
      const open = element("button", "conversation-open", title);
      open.title = title;
      Object.assign(open.dataset, { action: "open", testid: "conversation-title" });
      open.type = "button";
      if (conversation.id === store.openId) open.setAttribute("aria-current", "true");
      const rename = toolButton("pencil", `Rename “${title}”`);
      Object.assign(rename.dataset, { action: "rename", testid: "rename-conversation" });
      const remove = toolButton("trash", `Delete “${title}”`);
      Object.assign(remove.dataset, { action: "delete", testid: "delete-conversation" });
      item.append(open, rename, remove);
      return item;
    });
  ui.list.replaceChildren(...items);
}

function toolButton(iconName, label) {
  const button = element("button", "conversation-tool");
  button.type = "button";
  button.title = label;
  button.setAttribute("aria-label", label);
  button.append(icon(iconName));
  return button;
}

ui.list.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const id = button.closest("[data-id]").dataset.id;
  switch (button.dataset.action) {
    case "open":
      store.select(id);
      renderConversation();
      closeDrawer();
      break;
    case "rename":
      startRenaming(button.closest("li"), id);
      break;
    case "delete":
      // The first click asks; a second one on the same button deletes.
      if (button.dataset.confirm) return deleteConversation(id);
      button.dataset.confirm = "true";
      button.replaceChildren("Delete?");
      setTimeout(() => {
        delete button.dataset.confirm;
        button.replaceChildren(icon("trash"));
      }, CONFIRM_MS);
      break;
    default:
  }
});

function startRenaming(item, id) {
  const conversation = store.conversations.find((c) => c.id === id);
  const input = element("input", "rename-box");
  input.dataset.testid = "rename-input";
  input.value = conversation.title;
  input.setAttribute("aria-label", "Conversation name");
  item.replaceChildren(input);
  input.focus();
  input.select();
  let done = false;
  const finish = (save) => {
    if (done) return;
    done = true;
    if (save && input.value.trim()) conversation.title = input.value.trim();
    store.save();
    renderList();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    // Escape here cancels the rename, not the answer streaming meanwhile.
    if (event.key === "Escape") {
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
}

function deleteConversation(id) {
  if (current?.conversation.id === id) current.stop();
  const wasOpen = store.openId === id;
  store.remove(id);
  if (wasOpen) renderConversation();
  else renderList();
}

function newChat() {
  const open = store.open;
  // An untouched conversation is reused rather than piling up empty ones.
  if (open.messages.length > 0) store.create();
  renderConversation();
  closeDrawer();
  ui.prompt.value = "";
  updateComposer();
  ui.prompt.focus();
}

function closeDrawer() {
  document.body.removeAttribute("data-drawer");
  ui.scrim.hidden = true;
  ui.sidebarToggle.setAttribute("aria-expanded", "false");
}

ui.sidebarToggle.addEventListener("click", () => {
  const open = !document.body.hasAttribute("data-drawer");
  document.body.toggleAttribute("data-drawer", open);
  ui.scrim.hidden = !open;
  ui.sidebarToggle.setAttribute("aria-expanded", String(open));
});
ui.scrim.addEventListener("click", closeDrawer);

/** A streaming answer saved before a reload goes on where its saved text ends. */
function resumeInterrupted() {
  for (const conversation of store.conversations) {
    for (const message of conversation.messages) {
      if (message.state !== "streaming") continue;
      const generation = new Generation(conversation, message, pageHooks);
      if (message.streamId && !current) {
        start(generation, () => generation.reattach());
      } else {
        generation.fail("Interrupted", "The page was closed before this answer started.");
      }
    }
  }
}

// ---- Settings ----

function applyTheme() {
  const theme = store.settings.theme;
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  ui.themeLabel.textContent = THEME_NAMES[theme];
  ui.theme.setAttribute("aria-label", `Colour theme: ${THEME_NAMES[theme]}`);
}

ui.theme.addEventListener("click", () => {
  const next = THEMES[(THEMES.indexOf(store.settings.theme) + 1) % THEMES.length];
  store.settings.theme = next;
  store.saveSettings();
  applyTheme();
});

ui.settingsToggle.addEventListener("click", () => {
  const open = ui.settings.hidden;
  ui.settings.hidden = !open;
  ui.settingsToggle.setAttribute("aria-expanded", String(open));
  if (open) ui.system.focus();
});

ui.system.addEventListener("input", () => {
  const conversation = store.open;
  conversation.system = ui.system.value;
  store.touch(conversation);
});
for (const [input, name] of [[ui.temperature, "temperature"], [ui.maxTokens, "maxTokens"]]) {
  input.value = store.settings[name];
  input.addEventListener("input", () => {
    store.settings[name] = input.validity.valid ? input.value : "";
    store.saveSettings();
  });
}
ui.apiKey.value = store.apiKey;
ui.apiKey.addEventListener("change", () => {
  store.apiKey = ui.apiKey.value.trim();
  loadModels();
});
ui.model.addEventListener("change", () => {
  store.settings.model = ui.model.value;
  store.saveSettings();
});

/** The server answered 401: ask for a key, then send the refused turn again. */
function askForKey(reason) {
  ui.keyReason.replaceChildren(...withCode(reason));
  ui.keyInput.value = store.apiKey;
  if (!ui.keyDialog.open) ui.keyDialog.showModal();
}

ui.keyForm.addEventListener("submit", () => {
  store.apiKey = ui.keyInput.value.trim();
  ui.apiKey.value = store.apiKey;
  loadModels();
  regenerate();
});
ui.keyCancel.addEventListener("click", () => ui.keyDialog.close());

// ---- Prompt box ----

const sizesItself = CSS.supports("field-sizing", "content");
function fitPrompt() {
  if (sizesItself) return;
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${ui.prompt.scrollHeight}px`;
}

ui.prompt.addEventListener("input", () => {
  fitPrompt();
  updateComposer();
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    if (current) {
      // Nothing is queued behind the reader's back: the hint says why Enter did nothing.
      ui.hint.classList.remove("nudge");
      requestAnimationFrame(() => ui.hint.classList.add("nudge"));
      return;
    }
    send(ui.prompt.value);
  }
});
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send(ui.prompt.value);
});
ui.stop.addEventListener("click", () => current?.stop());
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && current && !ui.keyDialog.open) current.stop();
});
ui.newChat.addEventListener("click", newChat);
for (const button of document.querySelectorAll(".suggestion")) {
  button.addEventListener("click", () => send(button.textContent));
}

// ---- What the server offers ----

async function getJson(url) {
  const response = await fetch(url, { headers: authorized({ Accept: "application/json" }) });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

const serverInfo = getJson("/api/info").catch(() => null);

async function loadModels() {
  const [info, models] = await Promise.all([serverInfo, getJson("/v1/models").catch(() => null)]);
  const defaultModel = info?.default_model ?? null;
  if (info?.demo === true) ui.banner.hidden = false;

  let ids = [];
  if (Array.isArray(models?.data)) {
    ids = models.data.map((model) => model?.id).filter((id) => typeof id === "string");
    ids.sort((a, b) => a.localeCompare(b));
  }
  // Without a model list (an upstream that has none, a key not yet given) the default is the only choice.
  if (ids.length === 0 && defaultModel) ids = [defaultModel];
  const options = ids.map((id) => new Option(id, id));
  if (options.length === 0) options.push(new Option("Server default", ""));
  ui.model.replaceChildren(...options);
  const wanted = [store.settings.model, defaultModel].find((id) => id && ids.includes(id));
  if (wanted) ui.model.value = wanted;
}

// A generation streaming here writes into this tab's copy of the
// conversations, so another tab's save is taken in only while none does.
store.follow(() => !current, renderConversation);

applyTheme();
resumeInterrupted();
renderConversation();
updateComposer();
loadModels();
fitPrompt();
ui.prompt.focus();
