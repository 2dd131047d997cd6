// A minimal chat page on the AI SDK's own `useChat`, pointed at tokenrelay:
// the example README.md walks through, and the page tests/api/ui_page.rs
// drives in Chromium to show that a reload mid-answer resumes it exactly.
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport } from "ai";
import { useEffect, useState } from "react";
import { createRoot } from "react-dom/client";

// Same origin as the page: serve.mjs (or your own dev server) forwards
// /api/ to tokenrelay, so no CORS and no URL to configure.
const API = "/api/ui/chat";
const CHAT_ID = "ai-sdk-chat:id";
const MESSAGES = "ai-sdk-chat:messages";

// A reload must come back to the same chat: tokenrelay resumes by chat id,
// and the questions asked so far live only in the page.
function savedChat() {
  let id = localStorage.getItem(CHAT_ID);
  if (!id) {
    id = crypto.randomUUID();
    localStorage.setItem(CHAT_ID, id);
  }
  return { id, messages: JSON.parse(localStorage.getItem(MESSAGES) ?? "[]") };
}

const transport = new DefaultChatTransport({
  api: API,
  // With PROXY_API_KEYS set on tokenrelay, send a key the page may hold:
  // headers: { Authorization: `Bearer ${key}` },
});

function Chat({ id, initialMessages }) {
  const { messages, sendMessage, status, stop, error } = useChat({
    id,
    messages: initialMessages,
    transport,
    // On mount useChat asks GET /api/ui/chat/{id}/stream; tokenrelay replays
    // an answer still in flight from its first part, and the SDK puts it in
    // place of the partial copy saved below, so nothing shows twice.
    resume: true,
  });
  const [input, setInput] = useState("");

  useEffect(() => {
    localStorage.setItem(MESSAGES, JSON.stringify(messages));
  }, [messages]);

  const busy = status === "submitted" || status === "streaming";
  const submit = (event) => {
    event.preventDefault();
    if (!input.trim() || busy) return;
    sendMessage({ text: input });
    setInput("");
  };
  // With resume on, stop() only disconnects this page (a reload could still
  // resume); the DELETE is what stops the upstream.
  const stopAnswer = async () => {
    await stop();
    await fetch(`${API}/${encodeURIComponent(id)}/stream`, { method: "DELETE" });
  };
  const newChat = () => {
    localStorage.removeItem(CHAT_ID);
    localStorage.removeItem(MESSAGES);
    location.reload();
  };

  const last = messages.at(-1);
  return (
    <main>
      {messages.map((message) => (
        <div
          key={message.id}
          data-testid="message"
          data-role={message.role}
          data-state={message === last && busy ? "streaming" : "done"}
        >
          <b>{message.role === "user" ? "You" : "Assistant"}: </b>
          <span data-testid="answer">
            {message.parts.map((part) => (part.type === "text" ? part.text : "")).join("")}
          </span>
        </div>
      ))}
      {error && <p data-testid="error">{error.message}</p>}
      <form onSubmit={submit}>
        <input
          data-testid="prompt"
          value={input}
          onChange={(event) => setInput(event.target.value)}
          placeholder="Ask something"
          autoFocus
        />
        {busy ? (
          <button type="button" data-testid="stop" onClick={stopAnswer}>Stop</button>
        ) : (
          <button type="submit" data-testid="send">Send</button>
        )}
        <button type="button" onClick={newChat}>New chat</button>
      </form>
    </main>
  );
}

const { id, messages } = savedChat();
createRoot(document.getElementById("root")).render(<Chat id={id} initialMessages={messages} />);
