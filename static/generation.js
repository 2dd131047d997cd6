/*
 * One generation as the page follows it: the request, tokenrelay's events,
 * resuming, stopping. This is the reference client of the protocol, so it
 * does what a production front end should: Stop both aborts the fetch and
 * tells the server to stop paying the upstream, a dropped connection (or a
 * reload) resumes from the last event id instead of starting over, a replay
 * never repeats a token, and an answer never looks complete when it was not.
 *
 * It writes into the saved message only; whatever view shows that message
 * is told to redraw, and there may be none (its conversation is not open).
 */
import { readEvents } from "/sse.js";

/** Shortest span over which tokens per second is worth showing. */
const MIN_RATE_SECONDS = 0.05;
const RESUME_BACKOFF_MS = [500, 1000, 2000];

export class Generation {
  controller = new AbortController();
  view = null;
  lastSeq = -1;
  settled = false;
  /** Tokens this page has seen since it started reading; the rate is theirs. */
  seen = 0;
  sentAt = performance.now();
  firstTokenAt = null;

  /**
   * Streams into `message` of `conversation`, which outlive any view of
   * them. `page` is what the generation asks of the page around it:
   * `headers(base)` adds the credentials, `save(conversation, now)` keeps
   * the message, `settled(generation)` and `unauthorized(message)` report,
   * and `leaving()` tells a dropped connection from a page going away.
   */
  constructor(conversation, message, page) {
    this.conversation = conversation;
    this.message = message;
    this.page = page;
    if (message.lastEventId) this.lastSeq = seqOf(message.lastEventId);
  }

  attach(view) {
    this.view = view;
  }

  async run(body) {
    let response;
    try {
      response = await fetch("/api/chat", {
        method: "POST",
        headers: this.page.headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify(body),
        signal: this.controller.signal,
      });
    } catch {
      return this.fail("Could not reach the server", "Check that tokenrelay is running, then try again.");
    }
    if (!response.ok) return this.refused(response);
    this.message.streamId = response.headers.get("X-Stream-Id");
    this.page.save(this.conversation, true);
    await this.follow(response);
  }

  /** After a reload: carries on from the last event the saved text includes. */
  async reattach() {
    await this.follow(await this.resume());
  }

  /** Reads the stream to its end, resuming from the last event id when it breaks off. */
  async follow(response) {
    let failures = 0;
    for (;;) {
      if (response && (await this.consume(response))) failures = 0;
      if (this.settled || this.page.leaving()) return;
      if (!this.message.streamId || failures === RESUME_BACKOFF_MS.length) return this.connectionLost();
      this.view?.setReconnecting(failures + 1, RESUME_BACKOFF_MS.length);
      await sleep(RESUME_BACKOFF_MS[failures++], this.controller.signal);
      if (this.settled) return;
      response = await this.resume();
      if (this.settled) return;
      if (response) this.view?.setReconnecting(null);
    }
  }

  /** Reads one response; returns whether it brought any event not seen before. */
  async consume(response) {
    if (response.status === 204) {
      // The server has no event after the last one seen: the answer is complete.
      this.finish(this.message.finishReason);
      return true;
    }
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
    const headers = this.page.headers({ Accept: "text/event-stream" });
    if (this.message.lastEventId) headers["Last-Event-ID"] = this.message.lastEventId;
    try {
      const response = await fetch(`/api/chat/${encodeURIComponent(this.message.streamId)}/events`, {
        headers,
        signal: this.controller.signal,
      });
      if (response.ok) return response;
      // Only a busy or broken server is worth asking again; 404 means the stream is gone.
      if (response.status < 500 && response.status !== 429) await this.refused(response);
    } catch {
      // Still offline: the caller waits and tries again.
    }
    return null;
  }

  async refused(response) {
    const [title, detail, code] = await httpError(response);
    this.fail(title, detail, code);
    if (response.status === 401) this.page.unauthorized(detail);
  }

  handle(event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return false;
    }
    const message = this.message;
    if (event.id) {
      // Ids are `<stream_id>:<seq>`; a replay after resuming must never repeat text.
      const seq = seqOf(event.id);
      if (Number.isInteger(seq)) {
        if (seq <= this.lastSeq) return false;
        this.lastSeq = seq;
      }
      message.lastEventId = event.id;
    }
    if (data.choice) return true; // only the first choice is shown
    switch (data.type) {
      case "start":
        message.streamId ??= data.stream_id;
        message.model = data.model;
        break;
      case "token":
        this.noteFirstEvent();
        this.firstTokenAt ??= performance.now();
        this.seen += 1;
        if (data.refusal === true) message.refusal = true;
        message.content += data.token;
        message.thoughtFor ??= this.thinkingSeconds();
        this.updateRate();
        break;
      case "reasoning":
        this.noteFirstEvent();
        message.thinkingSince ??= Date.now();
        message.reasoning += data.token;
        break;
      case "tool_call":
        message.thoughtFor ??= this.thinkingSeconds();
        this.addToolCall(data);
        break;
      case "finish":
        message.finishReason = data.finish_reason;
        this.finish(data.finish_reason);
        break;
      case "error":
        this.fail("The generation failed", data.message, data.code);
        break;
      default: // newer event types are not ours to guess at
    }
    this.changed();
    return true;
  }

  addToolCall({ index = 0, id, name, arguments: fragment }) {
    const call = (this.message.toolCalls[index] ??= { id: "", name: "", arguments: "" });
    if (id) call.id = id;
    if (name) call.name = name;
    if (fragment) call.arguments += fragment;
  }

  thinkingSeconds() {
    const since = this.message.thinkingSince;
    return since ? (Date.now() - since) / 1000 : null;
  }

  changed() {
    this.view?.update();
    this.page.save(this.conversation, false);
  }

  noteFirstEvent() {
    // A generation resumed after a reload keeps the time measured before it.
    if (this.message.figures?.ttft !== undefined) return;
    this.figure("ttft", Math.round(performance.now() - this.sentAt));
  }

  updateRate() {
    this.figure("tokens", (this.message.figures?.tokens ?? 0) + 1);
    const seconds = (performance.now() - this.firstTokenAt) / 1000;
    // The first token starts the clock, so it does not count towards the rate;
    // tokens that arrive in one burst say nothing about speed, so the rate
    // waits for a measurable stretch of time.
    if (this.seen > 1 && seconds >= MIN_RATE_SECONDS) {
      this.figure("tps", ((this.seen - 1) / seconds).toFixed(1));
    }
  }

  figure(name, value) {
    this.message.figures = { ...this.message.figures, [name]: value };
  }

  finish(reason = "stop") {
    if (this.settled) return;
    if (reason === "cancelled") return this.settle("stopped", "Stopped");
    const notes = { length: "Cut off at the token limit", content_filter: "Stopped by the content filter" };
    this.settle("done", notes[reason] ?? "");
  }

  fail(title, detail, code) {
    if (this.settled || this.page.leaving()) return;
    this.message.error = { title, detail, code };
    this.settle("error", "");
  }

  connectionLost() {
    this.fail("Connection lost", "The connection dropped before the answer was complete.");
  }

  /** The Stop button: the server stops the upstream, and we stop listening. */
  stop() {
    if (this.settled) return;
    const id = this.message.streamId;
    if (id) fetch(`/api/chat/${encodeURIComponent(id)}`, { method: "DELETE", headers: this.page.headers({}) }).catch(() => {});
    this.settle("stopped", "Stopped");
    this.controller.abort();
  }

  settle(state, status) {
    this.settled = true;
    Object.assign(this.message, { state, status });
    this.message.thoughtFor ??= this.thinkingSeconds();
    delete this.message.thinkingSince;
    this.view?.settle();
    this.page.settled(this);
  }
}

function seqOf(eventId) {
  return Number(eventId.slice(eventId.lastIndexOf(":") + 1));
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
