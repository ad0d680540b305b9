"""OpenAI's surfaces spoken by flowcall: Chat Completions and the Responses API, pure translation
of their requests, answers and events, and the Responses API's per-tenant store."""
