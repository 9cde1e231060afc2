"""What the API server's `POST /build` needs, without the server: the query parameters
docker 20.10's classic builder sends turned into build options, and the build run as
the JSON progress stream docker's clients read (`{"stream": "Step 1/3 : FROM ..."}`,
`{"aux": {"ID": "sha256:..."}}` for the image id, `{"errorDetail": {...}, "error": ...}`
when it fails). The request body is the context, a tar.

    for msg in stream(store, options_from_query(query, body)):
        write(json.dumps(msg) + "\\r\\n")
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import IO, Any

from cove.errors import CoveError
from cove.image.build.builder import Options, build
from cove.image.store import Store


def _flag(v: str | None) -> bool:
    return (v or "").lower() in ("1", "true", "yes")


def _json_map(query: Mapping[str, str], key: str) -> dict[str, str]:
    raw = query.get(key)
    if not raw:
        return {}
    try:
        v = json.loads(raw)
    except ValueError:
        raise CoveError(f"build: {key}", "not a JSON object") from None
    if not isinstance(v, dict):
        raise CoveError(f"build: {key}", "not a JSON object")
    # docker sends null for a build arg given without a value: the caller's (none here)
    return {str(k): str(x) for k, x in v.items() if x is not None}


def options_from_query(query: Mapping[str, str], body: IO[bytes],
                       tags: list[str] | None = None) -> Options:
    """docker's query: `t` (repeatable: pass every value as `tags`), `dockerfile`,
    `buildargs`, `labels` (JSON), `target`, `nocache`, `pull`, `networkmode`, `q`,
    `platform`. `remote` (a git or URL context) is refused."""
    if query.get("remote"):
        raise CoveError("build: remote", "remote contexts are not supported: send a tar")
    net = query.get("networkmode") or "none"
    if net in ("default", "bridge"):
        net = "none"
    if net not in ("none", "host"):
        raise CoveError(f"build: networkmode {net}", "a build step runs with none or host")
    t = tags if tags is not None else ([query["t"]] if query.get("t") else [])
    return Options(context="-", stdin=body, dockerfile=query.get("dockerfile") or None,
                   tags=t, build_args=_json_map(query, "buildargs"),
                   labels=_json_map(query, "labels"), target=query.get("target") or None,
                   no_cache=_flag(query.get("nocache")), pull=_flag(query.get("pull")),
                   network=net, platform=query.get("platform") or None)


def stream(store: Store, opts: Options, quiet: bool = False) -> Iterator[dict[str, Any]]:
    """The build as docker's progress messages, each as soon as it is known (the build
    runs in a thread; its lines are passed on through a queue)."""
    q: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def run() -> None:
        try:
            res = build(store, opts, (lambda _s: None) if quiet else
                        (lambda s: q.put({"stream": s + "\n"})))
            if quiet:
                q.put({"stream": res.image_id + "\n"})
            q.put({"aux": {"ID": res.image_id}})
        except CoveError as e:
            q.put({"errorDetail": {"message": str(e)}, "error": str(e)})
        except Exception as e:  # reported to the client, not lost
            q.put({"errorDetail": {"message": f"build: {e}"}, "error": f"build: {e}"})
        finally:
            q.put(None)
    th = threading.Thread(target=run, name="cove-build", daemon=True)
    th.start()
    while (msg := q.get()) is not None:
        yield msg
    th.join()
