/*
 * What the demo page remembers in localStorage: the conversations, which
 * one is open, the reader's settings and their API key.
 *
 * A reload must lose nothing, including an answer that was still
 * streaming: its message keeps the stream id and the id of the last event
 * its text includes, written together so that resuming after a reload
 * neither skips nor repeats a token. Writes while an answer streams are
 * coalesced, since each one serializes every conversation.
 */

const KEYS = {
  conversations: "tokenrelay.conversations",
  open: "tokenrelay.open",
  settings: "tokenrelay.settings",
  apiKey: "tokenrelay.apiKey",
};
const SAVE_DELAY_MS = 200;

function read(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // A full or disabled storage costs the reader their history, not the page.
  }
}

/**
 * A conversation: `{ id, title, system, messages, updatedAt }`. A message is
 * `{ role: "user", content }` or `{ role: "assistant", content, state,
 * reasoning, toolCalls, model, error, streamId, lastEventId }`, where
 * `state` is "streaming", "done", "stopped" or "error".
 */
export class Store {
  conversations = read(KEYS.conversations, []);
  openId = read(KEYS.open, null);
  settings = { model: "", temperature: "", maxTokens: "", theme: "system", ...read(KEYS.settings, {}) };
  #timer = null;

  constructor() {
    // Saved state is committed before the page goes away, whatever is pending.
    addEventListener("pagehide", () => this.flush());
  }

  /**
   * Takes in the conversations another tab of this page saved, when
   * `allowed()`, then calls `changed`. Each tab writes them whole, so taking
   * the other tab's copy keeps the next save from undoing its turns; which
   * conversation is open stays this tab's own.
   */
  follow(allowed, changed) {
    addEventListener("storage", (event) => {
      if (event.key !== KEYS.conversations || !allowed()) return;
      this.conversations = read(KEYS.conversations, []);
      changed();
    });
  }

  get apiKey() {
    return read(KEYS.apiKey, "");
  }

  set apiKey(key) {
    write(KEYS.apiKey, key);
  }

  /** The open conversation, created when there is none. */
  get open() {
    return this.conversations.find((c) => c.id === this.openId) ?? this.create();
  }

  create() {
    const conversation = { id: crypto.randomUUID(), title: "", system: "", messages: [], updatedAt: Date.now() };
    this.conversations.unshift(conversation);
    this.openId = conversation.id;
    this.save();
    return conversation;
  }

  select(id) {
    if (this.conversations.some((c) => c.id === id)) this.openId = id;
    this.save();
  }

  remove(id) {
    this.conversations = this.conversations.filter((c) => c.id !== id);
    if (this.openId === id) this.openId = this.conversations[0]?.id ?? null;
    this.save();
  }

  /** Marks `conversation` changed and writes soon; `now` writes at once. */
  touch(conversation, { now = false } = {}) {
    conversation.updatedAt = Date.now();
    this.save({ now });
  }

  saveSettings() {
    write(KEYS.settings, this.settings);
  }

  save({ now = true } = {}) {
    if (now) return this.flush();
    this.#timer ??= setTimeout(() => this.flush(), SAVE_DELAY_MS);
  }

  flush() {
    clearTimeout(this.#timer);
    this.#timer = null;
    write(KEYS.conversations, this.conversations);
    write(KEYS.open, this.openId);
  }
}
