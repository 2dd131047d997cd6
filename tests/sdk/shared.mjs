// What the two Node clients (node_client.mjs, ai_sdk_client.mjs) share: the
// tools they offer, how they report an error, and how they stay alive after
// an early close until tests/api/sdk.rs has checked the upstream was dropped.

// The tools of tests/fixtures/upstream/openai-parallel-tool-calls.sse, in
// chat-completions form.
export const TOOLS = [
  {
    type: "function",
    function: {
      name: "GetWeatherArgs",
      parameters: {
        type: "object",
        properties: { city: { type: "string" }, country: { type: "string" }, units: { type: "string" } },
      },
    },
  },
  {
    type: "function",
    function: {
      name: "get_stock_price",
      parameters: {
        type: "object",
        properties: { ticker: { type: "string" }, exchange: { type: "string" } },
      },
    },
  },
];

/** The error's class, every class it inherits from, and its message. */
export function describeError(error) {
  const classes = [];
  for (let proto = Object.getPrototypeOf(error); proto; proto = Object.getPrototypeOf(proto)) {
    classes.push(proto.constructor.name);
  }
  return { class: classes[0] ?? null, classes, message: String(error?.message ?? "") };
}

export async function waitForStdinToClose() {
  for await (const _ of process.stdin) {
    // Nothing is ever sent; only the end matters.
  }
}
