// The Vercel AI SDK (`streamText` over `@ai-sdk/openai-compatible`) pointed at
// tokenrelay, for tests/api/sdk.rs.
//
// Usage: node ai_sdk_client.mjs BASE_URL SCENARIO, where SCENARIO is one of
// text, tools, usage, failure, stream-error, early-close. Prints one JSON line
// with what the SDK reported, so that the Rust side asserts on what a user of
// the SDK would see. In early-close it then waits for stdin to close: the
// connection must have been dropped by the abort, not by this process exiting.

import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { APICallError, jsonSchema, streamText, tool } from "ai";

import { TOOLS, describeError, waitForStdinToClose } from "./shared.mjs";

const [baseURL, scenario] = process.argv.slice(2);

const provider = createOpenAICompatible({
  name: "tokenrelay",
  baseURL,
  apiKey: "unused",
  // The AI SDK asks for usage only when told to.
  includeUsage: scenario === "usage",
});
// Without `execute` the calls are reported, not run.
const tools = Object.fromEntries(
  TOOLS.map(({ function: { name, parameters } }) => [name, tool({ inputSchema: jsonSchema(parameters) })]),
);
const abort = new AbortController();
const result = { text: "", tool_calls: [], usage: null, finish_reason: null, error: null };

const report = (error) => {
  result.error = {
    ...describeError(error),
    is_api_call_error: APICallError.isInstance(error),
    status: error?.statusCode ?? null,
  };
};

try {
  const response = streamText({
    model: provider.chatModel("fake-model"),
    prompt: "hi",
    // No retries: a retried failure would hide the status error under test.
    maxRetries: 0,
    abortSignal: abort.signal,
    ...(scenario === "tools" ? { tools } : {}),
    // Errors are read from the stream below instead of logged.
    onError: () => {},
  });
  for await (const part of response.fullStream) {
    switch (part.type) {
      case "text-delta":
        result.text += part.text;
        if (scenario === "early-close") abort.abort();
        break;
      case "tool-call":
        result.tool_calls.push({ id: part.toolCallId, name: part.toolName, arguments: JSON.stringify(part.input) });
        break;
      case "finish": {
        result.finish_reason = part.rawFinishReason ?? null;
        const { inputTokens, outputTokens, totalTokens } = part.totalUsage;
        if (inputTokens !== undefined) {
          result.usage = { prompt_tokens: inputTokens, completion_tokens: outputTokens, total_tokens: totalTokens };
        }
        break;
      }
      case "error":
        report(part.error);
        break;
    }
  }
} catch (error) {
  report(error);
}

console.log(JSON.stringify(result));
if (scenario === "early-close") await waitForStdinToClose();
