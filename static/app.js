/*
 * The demo chat page's behaviour: it sends the whole conversation to
 * POST /api/chat and renders tokenrelay's event protocol as it arrives.
 *
 * It is deliberately the reference client of the protocol, so it does what a
 * production front end should: model text only ever becomes DOM text (never
 * HTML), Stop both aborts the fetch and tells the server to stop paying the
 * upstream, a dropped connection resumes from the last event id instead of
 * starting over, and an answer never looks complete when it was not.
 */
import { readEvents } from "/sse.js";

/** Shortest span over which tokens per second is worth showing. */
const MIN_RATE_SECONDS = 0.05;
const RESUME_BACKOFF_MS = [500, 1000, 2000];

const $ = (id) => document.getElementById(id);
const ui = {
  prompt: $("prompt"),
  composer: $("composer"),
  send: $("send"),
  stop: $("stop"),
  newChat: $("new-chat"),
  model: $("model"),
  system: $("system"),
  settings: $("settings"),
  settingsToggle: $("settings-toggle"),
  banner: $("demo-banner"),
  scroller: $("conversation"),
  empty: $("empty-state"),
  messages: $("messages"),
  template: $("assistant-template"),
};

/** User and assistant turns of this conversation; the system prompt is added per request. */
let history = [];
/** The generation being streamed, if any. */
let current = null;

window.tokenrelayDebug = { lastRequestBody: null };

// ---- Sending ----

function send(text) {
  text = text.trim();
  if (!text || current) return;
  // Captured, so that an answer settling after "New chat" lands in its own conversation.
  const turns = history;
  turns.push({ role: "user", content: text });
  addUserMessage(text);

  const system = ui.system.value.trim();
  const body = { messages: [...(system ? [{ role: "system", content: system }] : []), ...turns] };
  if (ui.model.value) body.model = ui.model.value;
  window.tokenrelayDebug.lastRequestBody = structuredClone(body);

  ui.prompt.value = "";
  fitPrompt();
  const generation = new Generation(new AssistantView(), (outcome) => {
    // A stopped answer is still what the user saw, so it stays in the history;
    // a failed one is left out so the next turn does not build on it.
    if (outcome !== "error" && generation.text) turns.push({ role: "assistant", content: generation.text });
    if (current === generation) current = null;
    setBusy(false);
  });
  current = generation;
  setBusy(true);
  generation.run(body).catch((error) => generation.fail("Something went wrong", error.message));
}

function setBusy(busy) {
  const hadFocus = document.activeElement === ui.send || document.activeElement === ui.stop;
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  if (hadFocus) (busy ? ui.stop : ui.prompt).focus();
}

function newChat() {
  current?.stop();
  current = null;
  history = [];
  ui.messages.replaceChildren();
  ui.empty.hidden = false;
  ui.prompt.value = "";
  fitPrompt();
  ui.prompt.focus();
}

// ---- One generation: request, events, resume, stop ----

class Generation {
  controller = new AbortController();
  streamId = null;
  lastEventId = null;
  lastSeq = -1;
  settled = false;
  text = "";
  tokens = 0;
  sentAt = performance.now();
  firstEventAt = null;
  firstTokenAt = null;

  constructor(view, onSettled) {
    this.view = view;
    this.onSettled = onSettled;
  }

  async run(body) {
    let response;
    try {
      response = await fetch("/api/chat", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: this.controller.signal,
      });
    } catch (error) {
      return this.fail("Could not reach the server", "Check that tokenrelay is running, then try again.");
    }
    if (!response.ok) return this.fail(...(await httpError(response)));
    this.streamId = response.headers.get("X-Stream-Id");
    await this.follow(response);
    if (!this.settled) this.connectionLost();
  }

  /** Reads the stream to its end, resuming from the last event id when it breaks off. */
  async follow(response) {
    let failures = 0;
    while (response) {
      if (await this.consume(response)) failures = 0;
      if (this.settled) return;
      response = null;
      while (!response) {
        if (!this.streamId || !this.lastEventId || failures === RESUME_BACKOFF_MS.length) {
          return this.connectionLost();
        }
        this.view.setReconnecting(failures + 1, RESUME_BACKOFF_MS.length);
        await sleep(RESUME_BACKOFF_MS[failures++], this.controller.signal);
        if (this.settled) return;
        response = await this.resume();
        if (this.settled) return;
      }
      this.view.setReconnecting(null);
    }
  }

  /** Reads one response; returns whether it brought any event not seen before. */
  async consume(response) {
    let progressed = false;
    try {
      for await (const event of readEvents(response.body)) {
        if (event.data === "[DONE]") {
          this.finish();
          break;
        }
        progressed = this.handle(event) || progressed;
        if (this.settled) break;
      }
    } catch {
      // The connection dropped (or Stop aborted it); `follow` decides what that means.
    }
    return progressed;
  }

  async resume() {
    try {
      const response = await fetch(`/api/chat/${encodeURIComponent(this.streamId)}/events`, {
        headers: { "Last-Event-ID": this.lastEventId, Accept: "text/event-stream" },
        signal: this.controller.signal,
      });
      if (response.ok) return response;
      // Only a busy or broken server is worth asking again; 404 means the stream is gone.
      if (response.status < 500 && response.status !== 429) this.fail(...(await httpError(response)));
    } catch {
      // Still offline: the caller waits and tries again.
    }
    return null;
  }

  handle(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return false;
    }
    if (event.id) {
      // Ids are `<stream_id>:<seq>`; a replay after resuming must never repeat text.
      const seq = Number(event.id.slice(event.id.lastIndexOf(":") + 1));
      if (Number.isInteger(seq)) {
        if (seq <= this.lastSeq) return false;
        this.lastSeq = seq;
      }
      this.lastEventId = event.id;
    }
    if (message.choice) return true; // only the first choice is shown
    switch (message.type) {
      case "start":
        this.streamId ??= message.stream_id;
        this.view.setModel(message.model);
        break;
      case "token":
        this.noteFirstEvent();
        this.firstTokenAt ??= performance.now();
        this.tokens += 1;
        this.text += message.token;
        this.view.appendAnswer(message.token, message.refusal === true);
        this.updateRate();
        break;
      case "reasoning":
        this.noteFirstEvent();
        this.view.appendThinking(message.token);
        break;
      case "tool_call":
        this.view.appendToolCall(message);
        break;
      case "finish":
        this.finish(message.finish_reason);
        break;
      case "error":
        this.fail("The generation failed", message.message, message.code);
        break;
      default: // newer event types are not ours to guess at
    }
    return true;
  }

  noteFirstEvent() {
    if (this.firstEventAt !== null) return;
    this.firstEventAt = performance.now();
    this.view.setFigure("ttft", Math.round(this.firstEventAt - this.sentAt));
  }

  updateRate() {
    this.view.setFigure("token-count", this.tokens);
    const seconds = (performance.now() - this.firstTokenAt) / 1000;
    // The first token starts the clock, so it does not count towards the rate;
    // tokens that arrive in one burst say nothing about speed, so the rate
    // waits for a measurable stretch of time.
    if (this.tokens > 1 && seconds >= MIN_RATE_SECONDS) {
      this.view.setFigure("tps", ((this.tokens - 1) / seconds).toFixed(1));
    }
  }

  finish(reason = "stop") {
    if (this.settled) return;
    if (reason === "cancelled") return this.settle("stopped", "Stopped");
    const notes = { length: "Cut off at the token limit", content_filter: "Stopped by the content filter" };
    this.settle("done", notes[reason] ?? "");
  }

  fail(title, detail, code) {
    if (this.settled) return;
    this.view.showError(title, detail, code);
    this.settle("error", "");
  }

  connectionLost() {
    this.fail("Connection lost", "The connection dropped before the answer was complete.");
  }

  /** The Stop button: the server stops the upstream, and we stop listening. */
  stop() {
    if (this.settled) return;
    if (this.streamId) {
      fetch(`/api/chat/${encodeURIComponent(this.streamId)}`, { method: "DELETE" }).catch(() => {});
    }
    this.settle("stopped", "Stopped");
    this.controller.abort();
  }

  settle(state, status) {
    this.settled = true;
    this.view.settle(state, status);
    this.onSettled(state);
  }
}

async function httpError(response) {
  let detail = response.statusText || "The server refused the request.";
  let code;
  try {
    const body = await response.json();
    if (body?.error?.message) ({ message: detail, code } = body.error);
  } catch {
    // Not our JSON error shape (a proxy in between, say): the status must do.
  }
  return [`Error ${response.status}`, detail, code];
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}

// ---- Rendering. Model output only ever becomes text nodes. ----

class AssistantView {
  constructor() {
    this.root = ui.template.content.firstElementChild.cloneNode(true);
    this.body = this.root.querySelector(".message-body");
    this.answer = this.root.querySelector(".answer");
    this.meta = this.root.querySelector(".meta");
    this.textNode = null;
    this.thinking = null;
    this.toolCalls = new Map();
    this.reconnecting = null;
    this.answer.classList.add("waiting");
    this.root.setAttribute("aria-busy", "true");
    appendMessage(this.root);
  }

  setModel(model) {
    if (model) this.root.querySelector(".meta-model").textContent = model;
  }

  appendAnswer(token, refusal) {
    this.answer.classList.remove("waiting");
    this.closeThinking();
    if (refusal) {
      this.answer.append(element("span", "refusal", token));
      this.textNode = null;
    } else if (this.textNode) {
      this.textNode.appendData(token);
    } else {
      this.textNode = document.createTextNode(token);
      this.answer.append(this.textNode);
    }
    scrollToEnd();
  }

  appendThinking(token) {
    this.answer.classList.remove("waiting");
    if (!this.thinking) {
      const details = element("details", "thinking active");
      details.dataset.testid = "thinking";
      details.open = true;
      const summary = element("summary", "", "Thinking…");
      const text = element("div", "thinking-text");
      details.append(summary, text);
      // Once the reader has opened or closed it, it is theirs: stop folding it automatically.
      summary.addEventListener("click", () => (this.thinking.touched = true));
      this.thinking = { details, summary, text, startedAt: performance.now(), touched: false, done: false };
      this.body.insertBefore(details, this.answer);
    }
    this.thinking.text.append(token);
    this.thinking.text.scrollTop = this.thinking.text.scrollHeight;
    scrollToEnd();
  }

  closeThinking() {
    const thinking = this.thinking;
    if (!thinking || thinking.done) return;
    thinking.done = true;
    thinking.details.classList.remove("active");
    const seconds = (performance.now() - thinking.startedAt) / 1000;
    thinking.summary.textContent = `Thought for ${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
    if (!thinking.touched) thinking.details.open = false;
  }

  appendToolCall({ index = 0, id, name, arguments: fragment }) {
    this.answer.classList.remove("waiting");
    let call = this.toolCalls.get(index);
    if (!call) {
      const root = element("div", "tool-call");
      root.dataset.testid = "tool-call";
      root.dataset.index = index;
      const head = element("div", "tool-head");
      const nameEl = element("code", "tool-name");
      const idEl = element("span", "tool-id");
      head.append(wrenchIcon(), element("span", "", "Tool call"), nameEl, idEl);
      const args = element("pre", "tool-args");
      root.append(head, args);
      this.body.insertBefore(root, this.meta);
      call = { nameEl, idEl, args };
      this.toolCalls.set(index, call);
    }
    if (name) call.nameEl.textContent = name;
    if (id) call.idEl.textContent = id;
    if (fragment) call.args.append(fragment);
    scrollToEnd();
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

  showError(title, detail, code) {
    const box = element("div", "error");
    box.dataset.testid = "error";
    box.append(element("strong", "", title));
    if (detail) box.append(" — ", detail);
    if (code) box.append(" ", element("code", "", code));
    this.body.insertBefore(box, this.meta);
    scrollToEnd();
  }

  settle(state, status) {
    this.setReconnecting(null);
    this.closeThinking();
    this.answer.classList.remove("waiting");
    this.root.dataset.state = state;
    this.root.removeAttribute("aria-busy");
    this.meta.querySelector(".status").textContent = status;
    scrollToEnd();
  }
}

function addUserMessage(text) {
  const root = element("div", "message user", text);
  root.dataset.testid = "message";
  root.dataset.role = "user";
  root.setAttribute("aria-label", "You");
  appendMessage(root);
}

function appendMessage(node) {
  ui.empty.hidden = true;
  ui.messages.append(node);
  pinned = true;
  scrollToEnd();
}

function wrenchIcon() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  path.setAttribute("d", "M14.7 6.3a4 4 0 0 0-5.4 5.4L3 18l3 3 6.3-6.3a4 4 0 0 0 5.4-5.4l-2.5 2.5-2.4-.6-.6-2.4Z");
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

// Follow the answer as it grows, unless the reader has scrolled up to read.
let pinned = true;
let scrollQueued = false;
ui.scroller.addEventListener("scroll", () => {
  const { scrollHeight, scrollTop, clientHeight } = ui.scroller;
  pinned = scrollHeight - scrollTop - clientHeight < 80;
});

function scrollToEnd() {
  if (!pinned || scrollQueued) return;
  scrollQueued = true;
  requestAnimationFrame(() => {
    scrollQueued = false;
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
  });
}

// ---- Prompt box ----

const sizesItself = CSS.supports("field-sizing", "content");
function fitPrompt() {
  if (sizesItself) return;
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${ui.prompt.scrollHeight}px`;
}

ui.prompt.addEventListener("input", fitPrompt);
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send(ui.prompt.value);
  }
});
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send(ui.prompt.value);
});
ui.stop.addEventListener("click", () => current?.stop());
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && current) current.stop();
});
ui.newChat.addEventListener("click", newChat);
ui.settingsToggle.addEventListener("click", () => {
  const open = ui.settings.hidden;
  ui.settings.hidden = !open;
  ui.settingsToggle.setAttribute("aria-expanded", String(open));
  if (open) ui.system.focus();
});
for (const button of document.querySelectorAll(".suggestion")) {
  button.addEventListener("click", () => send(button.textContent));
}

// ---- What the server offers ----

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

async function loadServerInfo() {
  const [info, models] = await Promise.allSettled([getJson("/api/info"), getJson("/v1/models")]);
  const defaultModel = info.value?.default_model ?? null;
  if (info.value?.demo === true) ui.banner.hidden = false;

  let ids = [];
  if (Array.isArray(models.value?.data)) {
    ids = models.value.data.map((model) => model?.id).filter((id) => typeof id === "string");
    ids.sort((a, b) => a.localeCompare(b));
  }
  // Without a model list (an upstream that has none, or an older server) the default is the only choice.
  if (ids.length === 0 && defaultModel) ids = [defaultModel];
  const options = ids.map((id) => new Option(id, id));
  if (options.length === 0) options.push(new Option("Server default", ""));
  ui.model.replaceChildren(...options);
  if (defaultModel && ids.includes(defaultModel)) ui.model.value = defaultModel;
}

loadServerInfo();
fitPrompt();
ui.prompt.focus();
