#!/usr/bin/env python3
"""A fake LLM provider for the gateway's integration tests (Python stdlib only).

It speaks the documented wire formats of the OpenAI API (chat completions, legacy completions,
embeddings, the Responses API, the model list) and the Anthropic Messages API, streaming and not,
with deterministic usage, so that tests can put the gateway in front of it and assert what the
gateway recorded.

    python3 fake_upstream.py [--port 0] [--prompt-tokens 12] [--completion-tokens 5]
                             [--embedding-tokens 8] [--anthropic-x-api-key-only]
                             [--no-stdin-watch] [--verbose]

Once listening on 127.0.0.1 it prints one line, `{"port": N}`, to stdout and flushes; nothing
else is ever written to stdout (request logs, with --verbose, go to stderr). It exits on
SIGTERM / SIGINT and when its standard input reaches EOF, so a test that dies does not leak it:
spawn it with a *piped* stdin and keep the pipe open (a stdin of /dev/null, or an inherited one
that is closed, makes it exit at once; --no-stdin-watch turns this off for manual use).

Routes (auth: `Authorization: Bearer ...` on OpenAI routes; `x-api-key` or
`Authorization: Bearer ...` on /v1/messages, since the anthropic 2.x SDK sends its api key as a
bearer token (--anthropic-x-api-key-only accepts only `x-api-key` there); a missing one is a 401
in that provider's error format):

    POST /v1/chat/completions   chat.completion / chat.completion.chunk stream (usage chunk only
                                with stream_options.include_usage)
    POST /v1/completions        text_completion, streaming likewise
    POST /v1/embeddings         list of embeddings (float or base64, as asked), usage 8/8
    POST /v1/responses          Responses API object; stream of response.* events
    GET  /v1/models             model list (Anthropic's shape when anthropic-version is sent)
    POST /v1/messages           Anthropic message; stream of message_start ... message_stop
                                (needs `anthropic-version`, else 400)

Special models (the request's `model`):
    error-400, error-500, error-NNN   that status with the provider's own error body
                                      (a 429 also carries `retry-after: 1`)
    slow-stream (any model "slow*")   streams 50 deltas 100 ms apart; non-streaming, sleeps 1 s
Everything else answers "hello from fake" with 12 prompt / input tokens and 5 completion / output
tokens (embeddings: 8 prompt tokens).

Control routes (not recorded):
    GET  /_requests   every request so far: [{method, path, authorization, x_api_key,
                      anthropic_version, headers, body, time}]  (body = parsed JSON or null)
    POST /_reset      clears the recorded requests and the completed / aborted counts
    GET  /_stats      {"open_streams", "completed_streams", "aborted_streams"}; a stream is
                      aborted when a write fails because the client went away.
"""

import argparse
import base64
import json
import os
import re
import signal
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TEXT_PIECES = ["hello", " from", " fake"]
SLOW_CHUNKS = 50
SLOW_INTERVAL = 0.1
SLOW_NON_STREAM_DELAY = 1.0
EMBEDDING = [0.125, -0.25, 0.5, 1.0]

OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class ClientGone(Exception):
    """The client closed the connection while we were writing to it."""


class State:
    """Everything the control routes expose; shared by the handler threads."""

    def __init__(self, prompt_tokens, completion_tokens, embedding_tokens):
        self.lock = threading.Lock()
        self.requests = []
        self.open_streams = 0
        self.completed_streams = 0
        self.aborted_streams = 0
        self.counter = 0
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.embedding_tokens = embedding_tokens

    def next_id(self):
        with self.lock:
            self.counter += 1
            return self.counter

    def record(self, entry):
        with self.lock:
            self.requests.append(entry)

    def reset(self):
        with self.lock:
            self.requests = []
            self.completed_streams = 0
            self.aborted_streams = 0

    def stream_started(self):
        with self.lock:
            self.open_streams += 1

    def stream_ended(self, aborted):
        with self.lock:
            self.open_streams -= 1
            if aborted:
                self.aborted_streams += 1
            else:
                self.completed_streams += 1

    def stats(self):
        with self.lock:
            return {
                "open_streams": self.open_streams,
                "completed_streams": self.completed_streams,
                "aborted_streams": self.aborted_streams,
            }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1"
    verbose = False
    anthropic_x_api_key_only = False
    state: State = None  # set in main()

    # ---- plumbing ---------------------------------------------------------------------------

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        if self.verbose:
            sys.stderr.write("fake_upstream: %s\n" % (format % args))

    def read_body(self):
        """Reads the whole request body (Content-Length or chunked), so keep-alive works."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers, up to the empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_json(self, status, obj, extra_headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def start_stream(self, extra_headers=None):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data):
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
            raise ClientGone() from e

    def sse(self, obj, event=None):
        """One SSE event: `event: X\\ndata: {...}\\n\\n` (or just the data line)."""
        text = "" if event is None else "event: %s\n" % event
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        self.write_chunk((text + "data: %s\n\n" % payload).encode())

    def run_stream(self, events, extra_headers=None):
        """Sends a streaming response; `events` is a generator that calls self.sse()."""
        self.start_stream(extra_headers)
        self.state.stream_started()
        aborted = False
        try:
            events()
            self.write_chunk(b"")  # the zero-length chunk that ends the body
        except ClientGone:
            aborted = True
            self.close_connection = True
        finally:
            self.state.stream_ended(aborted)

    # ---- dispatch ---------------------------------------------------------------------------

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method):
        raw = self.read_body()
        path = self.path.split("?", 1)[0]
        if path == "/_requests" and method == "GET":
            with self.state.lock:
                recorded = list(self.state.requests)
            return self.send_json(200, recorded)
        if path == "/_reset" and method == "POST":
            self.state.reset()
            return self.send_json(200, {"ok": True})
        if path == "/_stats" and method == "GET":
            return self.send_json(200, self.state.stats())

        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.state.record(
            {
                "method": method,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "x_api_key": self.headers.get("x-api-key"),
                "anthropic_version": self.headers.get("anthropic-version"),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
                "time": time.time(),
            }
        )
        req_id = self.state.next_id()

        anthropic = path == "/v1/messages" or (
            path == "/v1/models" and self.headers.get("anthropic-version") is not None
        )
        err = self.anthropic_error if anthropic else self.openai_error

        routes = {
            ("POST", "/v1/chat/completions"): self.route_chat_completions,
            ("POST", "/v1/completions"): self.route_completions,
            ("POST", "/v1/embeddings"): self.route_embeddings,
            ("POST", "/v1/responses"): self.route_responses,
            ("GET", "/v1/models"): self.route_models,
            ("POST", "/v1/messages"): self.route_messages,
        }
        route = routes.get((method, path))
        if route is None:
            return err(404, "Unknown route: %s %s" % (method, path), req_id)

        # Auth first, as the real services do.
        bearer = self.headers.get("Authorization", "")
        has_bearer = bearer.startswith("Bearer ") and bool(bearer[len("Bearer "):].strip())
        if anthropic:
            if not self.headers.get("x-api-key") and (
                self.anthropic_x_api_key_only or not has_bearer
            ):
                return err(401, "x-api-key header is required", req_id)
            if not self.headers.get("anthropic-version"):
                return err(400, "anthropic-version: header is required", req_id)
        elif not has_bearer:
            return err(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                req_id,
            )

        if method == "POST" and not isinstance(body, dict):
            return err(400, "The request body is not a JSON object.", req_id)
        body = body or {}
        model = str(body.get("model", ""))
        m = re.fullmatch(r"error-(\d{3})", model)
        if m:
            status = int(m.group(1))
            return err(status, "Fake upstream error %d for model %s" % (status, model), req_id)
        if model.startswith("slow") and not body.get("stream"):
            time.sleep(SLOW_NON_STREAM_DELAY)
        return route(body, model, req_id)

    # ---- errors -----------------------------------------------------------------------------

    def openai_error(self, status, message, req_id):
        etype, code = OPENAI_ERROR_TYPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        headers = {"x-request-id": "req_fake_%d" % req_id}
        if status == 429:
            headers["retry-after"] = "1"
        body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
        self.send_json(status, body, headers)

    def anthropic_error(self, status, message, req_id):
        etype = ANTHROPIC_ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        headers = {"request-id": "req_fake_%d" % req_id}
        if status == 429:
            headers["retry-after"] = "1"
        body = {
            "type": "error",
            "error": {"type": etype, "message": message},
            "request_id": "req_fake_%d" % req_id,
        }
        self.send_json(status, body, headers)

    # ---- helpers ----------------------------------------------------------------------------

    def pieces(self, model):
        """The text deltas of a streamed answer."""
        if model.startswith("slow"):
            return ["tok%d " % i for i in range(SLOW_CHUNKS)]
        return TEXT_PIECES

    def pause(self, model):
        if model.startswith("slow"):
            time.sleep(SLOW_INTERVAL)

    def openai_usage(self, chat=True):
        s = self.state
        usage = {
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "total_tokens": s.prompt_tokens + s.completion_tokens,
        }
        if chat:
            usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
            usage["completion_tokens_details"] = {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
        return usage

    @staticmethod
    def include_usage(body):
        opts = body.get("stream_options")
        return isinstance(opts, dict) and bool(opts.get("include_usage"))

    # ---- OpenAI -----------------------------------------------------------------------------

    def route_chat_completions(self, body, model, req_id):
        cid = "chatcmpl-fake-%d" % req_id
        created = int(time.time())
        headers = {"x-request-id": "req_fake_%d" % req_id, "openai-processing-ms": "1"}
        if not body.get("stream"):
            return self.send_json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "".join(TEXT_PIECES),
                                "refusal": None,
                            },
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": self.openai_usage(),
                },
                headers,
            )

        with_usage = self.include_usage(body)

        def chunk(choices, **extra):
            obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if with_usage:
                obj["usage"] = None
            obj.update(extra)
            return obj

        def events():
            self.sse(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}]))
            for piece in self.pieces(model):
                self.pause(model)
                self.sse(chunk([{"index": 0, "delta": {"content": piece},
                                 "logprobs": None, "finish_reason": None}]))
            self.sse(chunk([{"index": 0, "delta": {}, "logprobs": None,
                             "finish_reason": "stop"}]))
            if with_usage:
                self.sse(chunk([], usage=self.openai_usage()))
            self.sse("[DONE]")

        self.run_stream(events, headers)

    def route_completions(self, body, model, req_id):
        cid = "cmpl-fake-%d" % req_id
        created = int(time.time())
        headers = {"x-request-id": "req_fake_%d" % req_id}

        def obj(choices, usage=None, with_usage_key=True):
            o = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if with_usage_key:
                o["usage"] = usage
            return o

        if not body.get("stream"):
            return self.send_json(
                200,
                obj(
                    [{"text": "".join(TEXT_PIECES), "index": 0, "logprobs": None,
                      "finish_reason": "stop"}],
                    self.openai_usage(chat=False),
                ),
                headers,
            )

        with_usage = self.include_usage(body)

        def events():
            for piece in self.pieces(model):
                self.pause(model)
                self.sse(obj([{"text": piece, "index": 0, "logprobs": None,
                               "finish_reason": None}], with_usage_key=with_usage))
            self.sse(obj([{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}],
                         with_usage_key=with_usage))
            if with_usage:
                self.sse(obj([], self.openai_usage(chat=False)))
            self.sse("[DONE]")

        self.run_stream(events, headers)

    def route_embeddings(self, body, model, req_id):
        inputs = body.get("input")
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
        ):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return self.openai_error(400, "'input' is required", req_id)
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack("<%df" % len(EMBEDDING), *EMBEDDING)).decode()
        else:
            vector = EMBEDDING
        tokens = self.state.embedding_tokens
        self.send_json(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector}
                    for i in range(len(inputs))
                ],
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            {"x-request-id": "req_fake_%d" % req_id},
        )

    def route_responses(self, body, model, req_id):
        rid = "resp_fake_%d" % req_id
        mid = "msg_fake_%d" % req_id
        created = int(time.time())
        headers = {"x-request-id": "req_fake_%d" % req_id}
        s = self.state
        usage = {
            "input_tokens": s.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": s.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": s.prompt_tokens + s.completion_tokens,
        }

        def part(text):
            return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

        def item(text, status):
            return {
                "type": "message",
                "id": mid,
                "status": status,
                "role": "assistant",
                "content": [part(text)] if text is not None else [],
            }

        def response(status, output, usage_value):
            return {
                "id": rid,
                "object": "response",
                "created_at": created,
                "status": status,
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"),
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": None,
                "reasoning": {"effort": None, "summary": None},
                "store": True,
                "temperature": 1.0,
                "text": {"format": {"type": "text"}},
                "tool_choice": "auto",
                "tools": [],
                "top_p": 1.0,
                "truncation": "disabled",
                "usage": usage_value,
                "user": None,
                "metadata": {},
            }

        if not body.get("stream"):
            full = "".join(TEXT_PIECES)
            return self.send_json(
                200, response("completed", [item(full, "completed")], usage), headers
            )

        def events():
            seq = iter(range(1_000_000))

            def ev(kind, **fields):
                self.sse(dict(type=kind, sequence_number=next(seq), **fields), event=kind)

            ev("response.created", response=response("in_progress", [], None))
            ev("response.in_progress", response=response("in_progress", [], None))
            ev("response.output_item.added", output_index=0, item=item(None, "in_progress"))
            ev("response.content_part.added", item_id=mid, output_index=0, content_index=0,
               part=part(""))
            text = ""
            for piece in self.pieces(model):
                self.pause(model)
                text += piece
                ev("response.output_text.delta", item_id=mid, output_index=0, content_index=0,
                   delta=piece, logprobs=[])
            ev("response.output_text.done", item_id=mid, output_index=0, content_index=0,
               text=text, logprobs=[])
            ev("response.content_part.done", item_id=mid, output_index=0, content_index=0,
               part=part(text))
            ev("response.output_item.done", output_index=0, item=item(text, "completed"))
            ev("response.completed",
               response=response("completed", [item(text, "completed")], usage))

        self.run_stream(events, headers)

    def route_models(self, body, model, req_id):
        ids = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-sonnet-4-5",
               "slow-stream", "error-400", "error-500"]
        if self.headers.get("anthropic-version") is not None:
            data = [
                {"type": "model", "id": i, "display_name": i,
                 "created_at": "2025-01-01T00:00:00Z"}
                for i in ids
            ]
            return self.send_json(
                200,
                {"data": data, "has_more": False, "first_id": ids[0], "last_id": ids[-1]},
                {"request-id": "req_fake_%d" % req_id},
            )
        data = [{"id": i, "object": "model", "created": 1700000000, "owned_by": "fake"}
                for i in ids]
        self.send_json(200, {"object": "list", "data": data},
                       {"x-request-id": "req_fake_%d" % req_id})

    # ---- Anthropic --------------------------------------------------------------------------

    def route_messages(self, body, model, req_id):
        mid = "msg_fake_%d" % req_id
        headers = {"request-id": "req_fake_%d" % req_id}
        s = self.state

        def message(content, stop_reason, usage):
            return {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage,
            }

        def usage(output_tokens):
            return {
                "input_tokens": s.prompt_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": output_tokens,
            }

        if not body.get("stream"):
            return self.send_json(
                200,
                message([{"type": "text", "text": "".join(TEXT_PIECES)}], "end_turn",
                        usage(s.completion_tokens)),
                headers,
            )

        def events():
            def ev(kind, **fields):
                self.sse(dict(type=kind, **fields), event=kind)

            ev("message_start", message=message([], None, usage(1)))
            ev("content_block_start", index=0, content_block={"type": "text", "text": ""})
            ev("ping")
            for piece in self.pieces(model):
                self.pause(model)
                ev("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
            ev("content_block_stop", index=0)
            ev("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
               usage={"output_tokens": s.completion_tokens})
            ev("message_stop")

        self.run_stream(events, headers)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # `race` tests open many connections at once


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--prompt-tokens", type=int, default=12)
    parser.add_argument("--completion-tokens", type=int, default=5)
    parser.add_argument("--embedding-tokens", type=int, default=8)
    parser.add_argument("--anthropic-x-api-key-only", action="store_true",
                        help="Anthropic routes: 401 unless x-api-key is sent")
    parser.add_argument("--no-stdin-watch", action="store_true",
                        help="do not exit when stdin reaches EOF")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args()

    Handler.state = State(args.prompt_tokens, args.completion_tokens, args.embedding_tokens)
    Handler.verbose = args.verbose
    Handler.anthropic_x_api_key_only = args.anthropic_x_api_key_only
    server = Server(("127.0.0.1", args.port), Handler)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    if not args.no_stdin_watch:
        def watch_stdin():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdout.write(json.dumps({"port": server.server_address[1]}) + "\n")
    sys.stdout.flush()

    while not stop.wait(0.1):
        pass
    # Leave at once: open streams are in daemon threads, and the OS closes every socket.
    os._exit(0)


if __name__ == "__main__":
    main()
