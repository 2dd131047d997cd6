// The official OpenAI Node SDK pointed at tokenrelay, for tests/api/sdk.rs.
//
// Usage: node node_client.mjs BASE_URL SCENARIO, where SCENARIO is one of
// text, tools, usage, failure, stream-error, early-close. Prints one JSON line
// with what the SDK reported, so that the Rust side asserts on what a user of
// the SDK would see. In early-close it then waits for stdin to close: the
// connection must have been dropped by the SDK, not by this process exiting.

import OpenAI from "openai";

import { TOOLS, describeError, waitForStdinToClose } from "./shared.mjs";

const [baseURL, scenario] = process.argv.slice(2);

// No retries: a retried failure would hide the status error under test.
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 20_000 });
const result = { text: "", tool_calls: [], usage: null, finish_reason: null, error: null };
const calls = new Map();

try {
  const stream = await client.chat.completions.create({
    model: "fake-model",
    messages: [{ role: "user", content: "hi" }],
    stream: true,
    ...(scenario === "tools" ? { tools: TOOLS } : {}),
    ...(scenario === "usage" ? { stream_options: { include_usage: true } } : {}),
  });
  for await (const chunk of stream) {
    if (chunk.usage) {
      const { prompt_tokens, completion_tokens, total_tokens } = chunk.usage;
      result.usage = { prompt_tokens, completion_tokens, total_tokens };
    }
    for (const choice of chunk.choices) {
      result.text += choice.delta.content ?? "";
      for (const call of choice.delta.tool_calls ?? []) {
        const entry = calls.get(call.index) ?? { id: null, name: "", arguments: "" };
        entry.id ??= call.id ?? null;
        entry.name += call.function?.name ?? "";
        entry.arguments += call.function?.arguments ?? "";
        calls.set(call.index, entry);
      }
      result.finish_reason = choice.finish_reason ?? result.finish_reason;
    }
    // Leaving the loop aborts the request: the SDK's documented way to stop.
    if (scenario === "early-close" && result.text) break;
  }
} catch (error) {
  result.error = {
    ...describeError(error),
    is_api_error: error instanceof OpenAI.APIError,
    status: error.status ?? null,
  };
}
result.tool_calls = [...calls.keys()].sort((a, b) => a - b).map((index) => calls.get(index));

console.log(JSON.stringify(result));
if (scenario === "early-close") await waitForStdinToClose();
