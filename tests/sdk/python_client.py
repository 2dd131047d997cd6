"""The official OpenAI Python SDK pointed at tokenrelay, for tests/api/sdk.rs.

Usage: python_client.py BASE_URL SCENARIO, where SCENARIO is one of text,
tools, usage, failure, stream-error, early-close. Prints one JSON line with
what the SDK reported (text, tool calls, usage, finish reason, the error it
raised), so that the Rust side asserts on what a user of the SDK would see.
In early-close it then waits for stdin to close: the connection must have
been dropped by the SDK closing the stream, not by this process exiting.
"""

import json
import sys

import openai

# The tools of tests/fixtures/upstream/openai-parallel-tool-calls.sse.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "GetWeatherArgs",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "country": {"type": "string"},
                    "units": {"type": "string"},
                },
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_stock_price",
            "parameters": {
                "type": "object",
                "properties": {
                    "ticker": {"type": "string"},
                    "exchange": {"type": "string"},
                },
            },
        },
    },
]


def run(base_url, scenario):
    # No retries: a retried failure would hide the status error under test.
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=20)
    result = {"text": "", "tool_calls": [], "usage": None, "finish_reason": None, "error": None}
    request = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    if scenario == "tools":
        request["tools"] = TOOLS
    if scenario == "usage":
        request["stream_options"] = {"include_usage": True}
    calls = {}
    try:
        stream = client.chat.completions.create(**request)
        for chunk in stream:
            if chunk.usage is not None:
                result["usage"] = {
                    "prompt_tokens": chunk.usage.prompt_tokens,
                    "completion_tokens": chunk.usage.completion_tokens,
                    "total_tokens": chunk.usage.total_tokens,
                }
            for choice in chunk.choices:
                delta = choice.delta
                result["text"] += delta.content or ""
                for call in delta.tool_calls or []:
                    entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                    entry["id"] = entry["id"] or call.id
                    if call.function is not None:
                        entry["name"] += call.function.name or ""
                        entry["arguments"] += call.function.arguments or ""
                if choice.finish_reason is not None:
                    result["finish_reason"] = choice.finish_reason
            if scenario == "early-close" and result["text"]:
                stream.close()
                break
    except openai.APIError as error:
        result["error"] = {
            "class": type(error).__name__,
            "classes": [cls.__name__ for cls in type(error).__mro__],
            "status": getattr(error, "status_code", None),
            "message": error.message,
        }
    result["tool_calls"] = [calls[index] for index in sorted(calls)]
    return result


def main():
    base_url, scenario = sys.argv[1], sys.argv[2]
    print(json.dumps(run(base_url, scenario)), flush=True)
    if scenario == "early-close":
        sys.stdin.read()


if __name__ == "__main__":
    main()
