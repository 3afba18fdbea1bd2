#!/usr/bin/env python3
"""Drives the official `openai` and `anthropic` Python SDKs for the gateway's integration tests.

The tests run this with the interpreter in LLM_ACCOUNTING_TEST_SDK_PYTHON (scripts/with-python-sdks
makes it) to check that real SDK clients work through the gateway: requests, streaming, usage,
error classes, rate limits, client disconnects.

    python sdk_client.py COMMAND --base-url URL --key KEY [--model M] [--stream]
                         [--max-tokens N] [--prompt TEXT] [--header NAME=VALUE ...]
                         [--no-stream-usage] [--timeout SECONDS] [--api openai|anthropic]
                         [--n N] [--anthropic-auth sdk|x-api-key|bearer]

Commands: openai-chat, openai-completions, openai-embeddings, openai-responses, openai-models,
anthropic-messages, race (--n N --api openai|anthropic: N threads each make one non-streaming
call at the same moment), disconnect (--api openai|anthropic: start a stream, read the first
text delta, close the response and exit).

For the OpenAI SDK --base-url is used as given (e.g. http://127.0.0.1:PORT/v1); for Anthropic
give the root (http://127.0.0.1:PORT): the SDK adds /v1/messages. Clients are always made with
max_retries=0 and a 30 s timeout (--timeout). --header NAME=VALUE goes into `default_headers`;
an empty VALUE (NAME=) removes a header the SDK would send (e.g. `--header Authorization=`).
OpenAI streams ask for usage with stream_options.include_usage unless --no-stream-usage.

Anthropic auth: the anthropic 2.x SDK sends the api key as `Authorization: Bearer KEY` (and
`anthropic-version: 2026-10-21`); 1.x sent `x-api-key: KEY` (and 2023-06-01).
--anthropic-auth x-api-key sends only `x-api-key`, bearer only `Authorization`; sdk (the default)
leaves it to the SDK. `--header anthropic-version=2023-06-01` pins the older version header.

Output: the LAST line of stdout is one JSON object, and the exit code is 0 either way:
    success  {"ok": true, "text": str|null, "usage": dict|null, "request_id": str|null,
              "headers": {lower-case name: value}, ...command extras}
    failure  {"ok": false, "error": "<SDK exception class>", "status": int|null,
              "message": str, "retry_after": str|null, "body": parsed body|null,
              "request_id": str|null, "headers": dict|null}
    race     {"ok": n_ok, "rate_limited": n_429, "other": [class names], "statuses": [...]}
`request_id` is the response's `x-request-id` header (null if absent); `headers` has all of them.
"""

import argparse
import json
import sys
import threading

DEFAULT_MODELS = {
    "openai-chat": "gpt-4o-mini",
    "openai-completions": "gpt-3.5-turbo-instruct",
    "openai-embeddings": "text-embedding-3-small",
    "openai-responses": "gpt-4o-mini",
    "openai-models": None,
    "anthropic-messages": "claude-sonnet-4-5",
}


def to_dict(obj):
    """An SDK model as the dict of what the server sent (None stays None)."""
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "model_dump"):
        return obj.model_dump(exclude_unset=True)
    return obj


def header_info(headers):
    if headers is None:
        return None, None
    return headers.get("x-request-id"), {k.lower(): v for k, v in headers.items()}


def success(text=None, usage=None, headers=None, **extra):
    request_id, all_headers = header_info(headers)
    out = {"ok": True, "text": text, "usage": to_dict(usage), "request_id": request_id,
           "headers": all_headers}
    out.update(extra)
    return out


def failure(e):
    """The JSON for an exception raised by either SDK."""
    response = getattr(e, "response", None)
    status = getattr(e, "status_code", None)
    body = None
    headers = None
    if response is not None:
        headers = response.headers
        if status is None:
            status = getattr(response, "status_code", None)
        try:
            body = json.loads(response.text)
        except Exception:
            # openai's e.body is the inner "error" object; the raw body is preferred above
            body = getattr(e, "body", None)
    request_id, all_headers = header_info(headers)
    return {
        "ok": False,
        "error": type(e).__name__,
        "status": status,
        "message": str(e),
        "retry_after": headers.get("retry-after") if headers is not None else None,
        "body": body,
        "request_id": request_id,
        "headers": all_headers,
    }


def parse_headers(args, omit):
    """--header pairs as (default_headers, extra_headers): values go into the client's
    default_headers; an empty value becomes an `Omit()` in every call's extra_headers, which is
    where the SDKs look for a deliberately removed header (openai 3.x rejects an omitted
    Authorization in default_headers with a TypeError)."""
    defaults, omitted = {}, {}
    for pair in args.header or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit("--header wants NAME=VALUE, got %r" % pair)
        if value:
            defaults[name] = value
        else:
            omitted[name] = omit
    return defaults, omitted


def openai_client(args):
    import openai

    defaults, omitted = parse_headers(args, openai.Omit())
    args.extra = {"extra_headers": omitted} if omitted else {}
    return openai.OpenAI(
        api_key=args.key,
        base_url=args.base_url,
        max_retries=0,
        timeout=args.timeout,
        default_headers=defaults,
    )


def anthropic_client(args):
    import anthropic

    defaults, omitted = parse_headers(args, anthropic.Omit())
    if args.anthropic_auth == "x-api-key":
        # anthropic 2.x sends the api key as `Authorization: Bearer`; 1.x sent `x-api-key`,
        # which this reproduces.
        defaults = {"x-api-key": args.key, **defaults}
        omitted = {"Authorization": anthropic.Omit(), **omitted}
    elif args.anthropic_auth == "bearer":
        defaults = {"Authorization": "Bearer " + args.key, **defaults}
        omitted = {"x-api-key": anthropic.Omit(), **omitted}
    args.extra = {"extra_headers": omitted} if omitted else {}
    return anthropic.Anthropic(
        api_key=args.key,
        base_url=args.base_url,
        max_retries=0,
        timeout=args.timeout,
        default_headers=defaults,
    )


def messages(args):
    return [{"role": "user", "content": args.prompt}]


# ---- OpenAI ------------------------------------------------------------------------------------


def openai_chat(args):
    client = openai_client(args)
    kwargs = dict(model=args.model, messages=messages(args), max_tokens=args.max_tokens,
                  **args.extra)
    if not args.stream:
        raw = client.chat.completions.with_raw_response.create(**kwargs)
        completion = raw.parse()
        return success(completion.choices[0].message.content, completion.usage, raw.headers,
                       id=completion.id)
    if not args.no_stream_usage:
        kwargs["stream_options"] = {"include_usage": True}
    text, usage, chunks = [], None, 0
    with client.chat.completions.create(stream=True, **kwargs) as stream:
        for chunk in stream:
            chunks += 1
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    text.append(choice.delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
        headers = stream.response.headers
    return success("".join(text), usage, headers, chunks=chunks)


def openai_completions(args):
    client = openai_client(args)
    kwargs = dict(model=args.model, prompt=args.prompt, max_tokens=args.max_tokens,
                  **args.extra)
    if not args.stream:
        raw = client.completions.with_raw_response.create(**kwargs)
        completion = raw.parse()
        return success(completion.choices[0].text, completion.usage, raw.headers,
                       id=completion.id)
    if not args.no_stream_usage:
        kwargs["stream_options"] = {"include_usage": True}
    text, usage, chunks = [], None, 0
    with client.completions.create(stream=True, **kwargs) as stream:
        for chunk in stream:
            chunks += 1
            for choice in chunk.choices:
                if choice.text:
                    text.append(choice.text)
            if chunk.usage is not None:
                usage = chunk.usage
        headers = stream.response.headers
    return success("".join(text), usage, headers, chunks=chunks)


def openai_embeddings(args):
    client = openai_client(args)
    raw = client.embeddings.with_raw_response.create(model=args.model, input=args.prompt,
                                                     **args.extra)
    result = raw.parse()
    return success(None, result.usage, raw.headers, embeddings=len(result.data),
                   dimensions=len(result.data[0].embedding) if result.data else 0)


def openai_responses(args):
    client = openai_client(args)
    kwargs = dict(model=args.model, input=args.prompt, max_output_tokens=args.max_tokens,
                  **args.extra)
    if not args.stream:
        raw = client.responses.with_raw_response.create(**kwargs)
        response = raw.parse()
        return success(response.output_text, response.usage, raw.headers, id=response.id)
    text, usage, events = [], None, []
    with client.responses.create(stream=True, **kwargs) as stream:
        for event in stream:
            events.append(event.type)
            if event.type == "response.output_text.delta":
                text.append(event.delta)
            elif event.type in ("response.completed", "response.incomplete", "response.failed"):
                usage = event.response.usage
        headers = stream.response.headers
    return success("".join(text), usage, headers, events=events)


def openai_models(args):
    client = openai_client(args)
    raw = client.models.with_raw_response.list(**args.extra)
    page = raw.parse()
    return success(None, None, raw.headers, models=[m.id for m in page.data])


# ---- Anthropic ---------------------------------------------------------------------------------


def anthropic_messages(args):
    client = anthropic_client(args)
    kwargs = dict(model=args.model, messages=messages(args), max_tokens=args.max_tokens,
                  **args.extra)
    if not args.stream:
        raw = client.messages.with_raw_response.create(**kwargs)
        message = raw.parse()
        text = "".join(b.text for b in message.content if b.type == "text")
        return success(text, message.usage, raw.headers, id=message.id)
    # The raw event stream: usage is message_start's, updated by message_delta's.
    text, usage, events = [], None, []
    with client.messages.create(stream=True, **kwargs) as stream:
        for event in stream:
            events.append(event.type)
            if event.type == "message_start":
                usage = to_dict(event.message.usage)
            elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                text.append(event.delta.text)
            elif event.type == "message_delta" and event.usage is not None:
                usage = dict(usage or {})
                usage.update({k: v for k, v in to_dict(event.usage).items() if v is not None})
        headers = stream.response.headers
    return success("".join(text), usage, headers, events=events)


# ---- race and disconnect -----------------------------------------------------------------------


def race(args):
    """N threads, one client each, released together by a barrier; counts the outcomes."""
    n = args.n
    if args.api == "openai":
        clients = [openai_client(args) for _ in range(n)]

        def call(client):
            client.chat.completions.create(model=args.model, messages=messages(args),
                                           max_tokens=args.max_tokens, **args.extra)
    else:
        clients = [anthropic_client(args) for _ in range(n)]

        def call(client):
            client.messages.create(model=args.model, messages=messages(args),
                                   max_tokens=args.max_tokens, **args.extra)

    barrier = threading.Barrier(n)
    lock = threading.Lock()
    result = {"ok": 0, "rate_limited": 0, "other": [], "statuses": []}

    def worker(client):
        try:
            barrier.wait(timeout=args.timeout)
        except threading.BrokenBarrierError:
            with lock:
                result["other"].append("BrokenBarrierError")
            return
        try:
            call(client)
            with lock:
                result["ok"] += 1
                result["statuses"].append(200)
        except Exception as e:  # noqa: BLE001 - every SDK error is an outcome to count
            status = getattr(e, "status_code", None)
            with lock:
                result["statuses"].append(status)
                if status == 429:
                    result["rate_limited"] += 1
                else:
                    result["other"].append(type(e).__name__)

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result["statuses"].sort(key=lambda s: (s is None, s or 0))
    return result


def disconnect(args):
    """Starts a stream, reads up to the first text delta, then closes the response."""
    text = None
    if args.api == "openai":
        client = openai_client(args)
        stream = client.chat.completions.create(
            model=args.model, messages=messages(args), max_tokens=args.max_tokens, stream=True,
            stream_options={"include_usage": True}, **args.extra,
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                text = chunk.choices[0].delta.content
                break
    else:
        client = anthropic_client(args)
        stream = client.messages.create(
            model=args.model, messages=messages(args), max_tokens=args.max_tokens, stream=True,
            **args.extra,
        )
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text = event.delta.text
                break
    headers = stream.response.headers
    stream.close()  # closes the HTTP response, and so the connection, mid-stream
    client.close()
    return success(text, None, headers, disconnected=True)


COMMANDS = {
    "openai-chat": openai_chat,
    "openai-completions": openai_completions,
    "openai-embeddings": openai_embeddings,
    "openai-responses": openai_responses,
    "openai-models": openai_models,
    "anthropic-messages": anthropic_messages,
    "race": race,
    "disconnect": disconnect,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", help="default depends on the command")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt", default="Say hello.")
    parser.add_argument("--header", action="append", metavar="NAME=VALUE",
                        help="extra default header; NAME= removes it")
    parser.add_argument("--no-stream-usage", action="store_true",
                        help="OpenAI streams: do not send stream_options.include_usage")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--anthropic-auth", choices=["sdk", "x-api-key", "bearer"], default="sdk",
                        help="how the Anthropic client sends --key: as the SDK does (2.x: "
                        "Authorization: Bearer), or forced to one header")
    parser.add_argument("--api", choices=["openai", "anthropic"], default="openai",
                        help="for race and disconnect")
    parser.add_argument("--n", type=int, default=20, help="for race")
    args = parser.parse_args()

    if args.model is None:
        if args.command == "disconnect":
            args.model = "slow-stream"
        elif args.command == "race":
            args.model = DEFAULT_MODELS[
                "openai-chat" if args.api == "openai" else "anthropic-messages"
            ]
        else:
            args.model = DEFAULT_MODELS[args.command]

    try:
        out = COMMANDS[args.command](args)
    except Exception as e:  # noqa: BLE001 - the tests read the error class from the JSON
        out = failure(e)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
