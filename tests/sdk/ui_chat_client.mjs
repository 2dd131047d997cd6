// The Vercel AI SDK's chat side (`AbstractChat`, the state machine under
// `useChat`, with `DefaultChatTransport`) pointed at tokenrelay's
// `/api/ui/chat`, for tests/api/ui_chat.rs.
//
// Usage: node ui_chat_client.mjs API_URL SCENARIO, where SCENARIO is one of
//   chat        send one message; report the answer
//   two-turns   send two messages, the second after the first answer
//   regenerate  send a message with an image, then regenerate the answer
//   tool-results answer every tool call in the page; the SDK sends the results
//   read        the transport's stream read with `readUIMessageStream`
//   resume      the connection breaks after the first text; `resumeStream()`
//   resume-none `resumeStream()` on a chat that never had an answer
//   stop        stop after the first text: the SDK's abort, then DELETE
// Prints one JSON line with what the SDK reported: the chat's status, error
// and messages, every chunk tokenrelay sent with the fields no part of the
// SDK's schema has, so that the Rust side asserts on what a user would see.
// In `stop` it then waits for stdin to close, so that only the abort and the
// DELETE can have ended the upstream request.

import {
  AbstractChat,
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithToolCalls,
  readUIMessageStream,
} from "ai";

import { describeError, waitForStdinToClose } from "./shared.mjs";

const [api, scenario] = process.argv.slice(2);

// The fields of every part type tokenrelay sends, as the SDK's
// `uiMessageChunkSchema` (ai 6.0.322, dist/index.mjs) lists them. The SDK's
// schema lets unknown fields through; strict clients do not, so every field
// beyond these is reported.
const FIELDS = {
  start: ["messageId", "messageMetadata"],
  "start-step": [],
  "text-start": ["id", "providerMetadata"],
  "text-delta": ["id", "delta", "providerMetadata"],
  "text-end": ["id", "providerMetadata"],
  "reasoning-start": ["id", "providerMetadata"],
  "reasoning-delta": ["id", "delta", "providerMetadata"],
  "reasoning-end": ["id", "providerMetadata"],
  "tool-input-start": [
    "toolCallId", "toolName", "inputEncoding", "providerExecuted", "providerMetadata", "toolMetadata", "dynamic", "title",
  ],
  "tool-input-delta": ["toolCallId", "inputTextDelta"],
  "tool-input-available": [
    "toolCallId", "toolName", "input", "providerExecuted", "providerMetadata", "toolMetadata", "dynamic", "title",
  ],
  "tool-input-error": [
    "toolCallId", "toolName", "input", "providerExecuted", "providerMetadata", "toolMetadata", "dynamic", "errorText", "title",
  ],
  "finish-step": [],
  finish: ["finishReason", "messageMetadata"],
  error: ["errorText"],
};

/** Everything a chunk has that its type's schema does not name. */
function extraFields(chunk) {
  const known = FIELDS[chunk.type];
  if (!known) return [`unknown type ${chunk.type}`];
  return Object.keys(chunk).filter((key) => key !== "type" && !known.includes(key));
}

// What every response carried: its chunks (as the SDK parsed them) and
// their stray fields, and the status and UI stream header.
const responses = [];

/**
 * `fetch` as the transport calls it, recording what tokenrelay sent. With
 * `breakAfterText`, the body fails with a network error after the chunk
 * holding the first text delta, as a dropped connection does.
 */
function recordingFetch({ breakAfterText = false } = {}) {
  let broken = false;
  return async (url, init) => {
    const response = await fetch(url, init);
    const record = {
      method: init?.method ?? "GET",
      status: response.status,
      ui_stream_header: response.headers.get("x-vercel-ai-ui-message-stream"),
      chunks: [],
      extra_fields: [],
      done: false,
    };
    responses.push(record);
    if (!response.body) return response;
    const decoder = new TextDecoder();
    let pending = "";
    const breakHere = breakAfterText && !broken;
    const body = response.body.pipeThrough(
      new TransformStream({
        transform(bytes, controller) {
          pending += decoder.decode(bytes, { stream: true });
          let sawText = false;
          let end;
          while ((end = pending.indexOf("\n\n")) !== -1) {
            const frame = pending.slice(0, end);
            pending = pending.slice(end + 2);
            for (const line of frame.split("\n")) {
              if (!line.startsWith("data: ")) continue;
              const data = line.slice("data: ".length);
              if (data === "[DONE]") {
                record.done = true;
                continue;
              }
              const chunk = JSON.parse(data);
              record.chunks.push(chunk);
              record.extra_fields.push(...extraFields(chunk).map((field) => `${chunk.type}.${field}`));
              sawText ||= chunk.type === "text-delta";
            }
          }
          controller.enqueue(bytes);
          if (breakHere && sawText) {
            broken = true;
            controller.error(new TypeError("network error: the connection was lost"));
          }
        },
      }),
    );
    return new Response(body, { status: response.status, headers: response.headers });
  };
}

/** The in-memory state `useChat` keeps in React, as the SDK's own tests do. */
class State {
  constructor() {
    this.status = "ready";
    this.error = undefined;
    this.messages = [];
  }
  pushMessage(message) {
    this.messages = this.messages.concat(message);
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  }
  snapshot(value) {
    return structuredClone(value);
  }
}

class Chat extends AbstractChat {
  constructor(options) {
    super({ ...options, state: new State() });
  }
}

const chatId = `chat-${scenario}-${process.pid}`;
const result = { chat_id: chatId, status: null, error: null, messages: [], responses, read: null, delete_status: null };

function newChat(fetchOptions, options = {}) {
  return new Chat({
    id: chatId,
    transport: new DefaultChatTransport({ api, fetch: recordingFetch(fetchOptions) }),
    ...options,
  });
}

/** Waits until `chat` shows `text` in its last message, or `limit` ms. */
async function waitForText(chat, limit = 10_000) {
  const deadline = Date.now() + limit;
  while (Date.now() < deadline) {
    const last = chat.messages.at(-1);
    if (last?.role === "assistant" && last.parts.some((part) => part.type === "text" && part.text.length > 0)) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error("no text arrived in time");
}

function finish(chat) {
  result.status = chat.status;
  result.error = chat.error ? describeError(chat.error) : null;
  result.messages = chat.messages;
}

try {
  switch (scenario) {
    case "chat": {
      const chat = newChat();
      await chat.sendMessage({ text: "hi" });
      finish(chat);
      break;
    }
    case "two-turns": {
      const chat = newChat();
      await chat.sendMessage({ text: "first question" });
      await chat.sendMessage({ text: "second question" });
      finish(chat);
      break;
    }
    case "regenerate": {
      const chat = newChat();
      const image = { type: "file", mediaType: "image/png", url: "data:image/png;base64,iVBORw0KGgo=" };
      await chat.sendMessage({ text: "what is this?", files: [image] });
      await chat.regenerate();
      finish(chat);
      break;
    }
    case "tool-results": {
      const chat = newChat(
        {},
        {
          sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
          // Not awaited, as the SDK asks: the output is applied in turn.
          onToolCall: ({ toolCall }) => {
            chat.addToolOutput({
              tool: toolCall.toolName,
              toolCallId: toolCall.toolCallId,
              output: { answered: toolCall.toolName },
            });
          },
        },
      );
      await chat.sendMessage({ text: "weather and stock?" });
      finish(chat);
      break;
    }
    case "read": {
      const transport = new DefaultChatTransport({ api, fetch: recordingFetch() });
      const stream = await transport.sendMessages({
        chatId,
        messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: "hi" }] }],
        trigger: "submit-message",
        messageId: undefined,
        abortSignal: undefined,
      });
      let last = null;
      for await (const message of readUIMessageStream({ stream, terminateOnError: true })) {
        last = message;
      }
      result.read = last;
      break;
    }
    case "resume": {
      const chat = newChat({ breakAfterText: true });
      await chat.sendMessage({ text: "hi" });
      result.status_after_break = chat.status;
      result.text_after_break = chat.messages.at(-1)?.parts.filter((part) => part.type === "text").map((part) => part.text).join("");
      await chat.resumeStream();
      finish(chat);
      break;
    }
    case "resume-none": {
      const chat = newChat();
      await chat.resumeStream();
      finish(chat);
      break;
    }
    case "stop": {
      const chat = newChat();
      const sending = chat.sendMessage({ text: "hi" });
      await waitForText(chat);
      // With resume on, the SDK's stop only disconnects; the DELETE stops
      // the generation itself.
      await chat.stop();
      await sending;
      const response = await fetch(`${api}/${encodeURIComponent(chatId)}/stream`, { method: "DELETE" });
      result.delete_status = response.status;
      finish(chat);
      break;
    }
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
} catch (error) {
  result.error = describeError(error);
}

console.log(JSON.stringify(result));
if (scenario === "stop") await waitForStdinToClose();
