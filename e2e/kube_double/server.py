"""The HTTP face of the double: routing of /api and /apis paths, content negotiation (JSON, Table,
PartialObjectMetadata, aggregated discovery), watch streams, and errors as `Status` objects."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from . import discovery, protobuf
from .api import Api
from .errors import ApiError, bad_request
from .resources import Kind
from .store import Event, SelectorError, matcher
from .table import table

BOOKMARK_EVERY = 1.0  # seconds; a real server sends one about once a minute, the protocol allows any interval


def _json(data, status: int = 200, content_type: str = "application/json", warnings=()) -> web.Response:
    resp = web.Response(text=json.dumps(data), status=status, content_type="application/json")
    if content_type != "application/json":
        resp.headers["Content-Type"] = content_type
    for w in warnings:
        resp.headers.add("Warning", f'299 - "{w}"')
    return resp


def _manager(request: web.Request) -> str:
    m = request.query.get("fieldManager")
    if m:
        return m
    agent = request.headers.get("User-Agent", "unknown")
    return agent.split("/")[0].split(" ")[0] or "unknown"


def _accept(request: web.Request) -> str:
    return request.headers.get("Accept", "")


def _partial(obj: dict) -> dict:
    return {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]}


class Server:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.address = ""
        self.closing = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except ApiError as e:
            return _json(e.status(), e.code)
        except SelectorError as e:
            return _json(bad_request(str(e)).status(), 400)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        reg = self.api.registry
        if path == "/version":
            return _json(discovery.VERSION)
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path in ("/api", "/apis"):
            if "as=APIGroupDiscoveryList" in _accept(request) and "v=v2;" in _accept(request) + ";":
                return _json(discovery.aggregated(reg, path == "/api"), content_type=discovery.AGGREGATED)
            return _json(discovery.api_versions(self.address) if path == "/api" else discovery.api_groups(reg))
        if path == "/openapi/v3":
            return _json(discovery.openapi_index(reg))
        if path.startswith("/openapi/v3/"):
            parts = path.split("/")[3:]
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            doc = discovery.openapi_doc(reg, group, version)
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(doc)
        segs = path.strip("/").split("/")
        if segs[0] == "api" and len(segs) >= 2:
            group, version, rest = "", segs[1], segs[2:]
        elif segs[0] == "apis" and len(segs) >= 3:
            group, version, rest = segs[1], segs[2], segs[3:]
        elif segs[0] == "apis" and len(segs) == 2:
            doc = discovery.api_group(reg, segs[1])
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(doc)
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            doc = discovery.resource_list(reg, group, version)
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(doc)
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (k := reg.find(group, version, rest[2])) and k.namespaced:
            namespace, rest = rest[1], rest[2:]
        kind = self.api.kind(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if kind.namespaced is False and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub and not ((sub == "status" and kind.status) or (sub == "scale" and kind.scale)):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({kind.plural}/{sub})")
        if name is None:
            return await self._collection(request, kind, namespace)
        return await self._item(request, kind, namespace, name, sub)

    async def _collection(self, request: web.Request, kind: Kind, namespace: str | None) -> web.StreamResponse:
        q = request.query
        if request.method == "GET":
            match = matcher(q.get("labelSelector"), q.get("fieldSelector"), namespace)
            if q.get("watch") in ("true", "1"):
                return await self._watch(request, kind, namespace, match)
            items, rv = self.api.list(kind, namespace, match)
            return self._list_response(request, kind, items, rv)
        if request.method == "POST":
            if not kind.namespaced and namespace is not None:
                raise bad_request("cluster-scoped kind")
            body = await self._body(request)
            obj = self.api.create(kind, namespace, body, _manager(request),
                                  validation=q.get("fieldValidation", "Warn"), dry_run=bool(q.get("dryRun")))
            return _json(obj, 201, warnings=obj.pop("_warnings", ()))
        if request.method == "DELETE":
            match = matcher(q.get("labelSelector"), q.get("fieldSelector"), namespace)
            items, rv = self.api.list(kind, namespace, match)
            for o in items:
                self.api.delete(kind, namespace, o["metadata"]["name"])
            return _json({"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                          "metadata": {"resourceVersion": rv}, "items": items})
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported on a collection")

    def _list_response(self, request, kind: Kind, items: list[dict], rv: str) -> web.Response:
        accept = _accept(request)
        if "as=Table" in accept:
            include = request.query.get("includeObject", "Metadata")
            return _json(table(kind, items, rv, include))
        q = request.query
        limit = int(q.get("limit") or 0)
        start = int(q.get("continue") or 0)
        page = items[start:start + limit] if limit else items[start:]
        meta = {"resourceVersion": rv}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
        if "as=PartialObjectMetadataList" in accept:
            return _json({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                          "items": [_partial(o) for o in page]})
        return _json({"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta, "items": page})

    async def _item(self, request, kind: Kind, namespace: str | None, name: str, sub: str) -> web.StreamResponse:
        q = request.query
        validation = q.get("fieldValidation", "Warn")
        dry_run = bool(q.get("dryRun"))
        if sub == "scale":
            if request.method == "GET":
                return _json(self.api.get_scale(kind, namespace, name))
            if request.method in ("PATCH", "PUT"):
                return _json(self.api.set_scale(kind, namespace, name, request.headers.get("Content-Type", ""),
                                                await request.read(), _manager(request), request.method == "PUT"))
        elif request.method == "GET":
            obj = self.api.get(kind, namespace, name)
            if "as=Table" in _accept(request):
                return _json(table(kind, [obj], obj["metadata"]["resourceVersion"]))
            if "as=PartialObjectMetadata" in _accept(request):
                return _json(_partial(obj))
            return _json(obj)
        elif request.method == "PUT":
            obj = self.api.update(kind, namespace, name, await self._body(request), _manager(request), sub,
                                  validation, dry_run)
            return _json(obj, warnings=obj.pop("_warnings", ()))
        elif request.method == "PATCH":
            existed = self.api.store.get(self.api.key(kind), namespace or "", name) is not None
            obj = self.api.patch(kind, namespace, name, request.headers.get("Content-Type", ""), await request.read(),
                                 _manager(request), sub, q.get("force") == "true", validation, dry_run)
            return _json(obj, 200 if existed else 201, warnings=obj.pop("_warnings", ()))
        elif request.method == "DELETE" and not sub:
            opts = await self._body(request, "DeleteOptions") if request.can_read_body else {}
            propagation = q.get("propagationPolicy") or opts.get("propagationPolicy")
            if opts.get("orphanDependents") is True:
                propagation = "Orphan"
            return _json(self.api.delete(kind, namespace, name, propagation, opts.get("preconditions"),
                                         bool(q.get("dryRun") or opts.get("dryRun"))))
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported here")

    async def _body(self, request, expect: str | None = None) -> dict:
        raw = await request.read()
        if "protobuf" in request.headers.get("Content-Type", ""):
            try:
                return protobuf.decode_envelope(raw, expect)
            except protobuf.ProtobufError as e:
                raise ApiError(415, "UnsupportedMediaType", str(e)) from e
        if not raw.strip() and expect == "DeleteOptions":
            return {}
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise bad_request(f"the request body is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise bad_request("the request body is not an object")
        return body

    async def _watch(self, request, kind: Kind, namespace: str | None, match) -> web.StreamResponse:
        """Newline-delimited watch events. A resourceVersion older than the history gets one ERROR event with a
        410 Status (what kube-runtime and client-go expect; an HTTP 410 would make them retry forever)."""
        q = request.query
        timeout = float(q.get("timeoutSeconds") or 1800)
        bookmarks = q.get("allowWatchBookmarks") == "true"
        partial = "as=PartialObjectMetadata" in _accept(request)
        store = self.api.store
        key = self.api.key(kind)
        queue: asyncio.Queue[Event] = asyncio.Queue()
        store.watchers.add(queue)
        try:
            rv = q.get("resourceVersion")
            pending: list[tuple[str, dict]] = []
            expired = False
            if rv in (None, "", "0"):
                items, _ = self.api.list(kind, namespace, match)
                pending = [("ADDED", o) for o in items]
            else:
                try:
                    since = int(rv)
                except ValueError as e:
                    raise bad_request(f"invalid resourceVersion {rv!r}") from e
                if since < store.oldest_resumable():
                    expired = True
                else:
                    for ev in list(store.history):
                        if ev.rv > since and ev.key == key:
                            pending += self._translate(kind, ev, match)
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            if expired:
                status = ApiError(410, "Expired", f"too old resource version: {rv} ({store.oldest_resumable()})")
                await resp.write(json.dumps({"type": "ERROR", "object": status.status()}).encode() + b"\n")
                return resp
            for t, o in pending:
                await resp.write(self._line(t, o, partial))
            if q.get("sendInitialEvents") == "true":
                # A streaming list (KEP-3157, what Helm 4's readiness watcher uses): the initial ADDED events end
                # with a bookmark annotated k8s.io/initial-events-end.
                mark = {"apiVersion": kind.api_version, "kind": kind.kind,
                        "metadata": {"resourceVersion": str(store.rv),
                                     "annotations": {"k8s.io/initial-events-end": "true"}}}
                await resp.write(json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n")
            deadline = time.monotonic() + timeout
            last_sent_rv = store.rv
            while not self.closing.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(queue.get(), min(left, BOOKMARK_EVERY))
                except asyncio.TimeoutError:
                    if bookmarks and queue.empty() and store.rv != last_sent_rv:
                        last_sent_rv = store.rv
                        mark = {"apiVersion": kind.api_version, "kind": kind.kind,
                                "metadata": {"resourceVersion": str(store.rv)}}
                        await resp.write(json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n")
                    continue
                if ev.key != key:
                    continue
                for t, o in self._translate(kind, ev, match):
                    await resp.write(self._line(t, o, partial))
            return resp
        except ConnectionResetError:  # the client went away: its watch is over
            return web.Response(status=499)
        finally:
            store.watchers.discard(queue)

    def _translate(self, kind: Kind, ev: Event, match) -> list[tuple[str, dict]]:
        """A stored event as this watch sees it: selector transitions turn MODIFIED into ADDED or DELETED."""
        new = self.api.view(kind, ev.obj)
        old = self.api.view(kind, ev.old) if ev.old is not None else None
        now_in, was_in = match(new), match(old)
        if ev.type == "ADDED":
            return [("ADDED", new)] if now_in else []
        if ev.type == "DELETED":
            return [("DELETED", new)] if now_in or was_in else []
        if now_in and was_in:
            return [("MODIFIED", new)]
        if now_in:
            return [("ADDED", new)]
        if was_in:
            return [("DELETED", new)]
        return []

    @staticmethod
    def _line(t: str, obj: dict, partial: bool) -> bytes:
        return json.dumps({"type": t, "object": _partial(obj) if partial else obj}).encode() + b"\n"
