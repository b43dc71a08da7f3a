"""Media files: safe paths under MEDIA_ROOT, atomic writes, and permission-checked sending.

Nothing under MEDIA_ROOT is served as a folder. Views check the user's role in the object's
project, then hand the file over with `send_file`, which streams it from Python or, behind
nginx/Apache, answers with X-Accel-Redirect / X-Sendfile so the proxy sends the bytes.
"""
from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import shutil
import time
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse, HttpResponseNotModified
from django.utils.http import http_date, quote_etag

from imaging.imageio import atomic_write_bytes


def media_root() -> Path:
    return Path(settings.MEDIA_ROOT)


def resolve(relative: str) -> Path:
    """The absolute path of a media file, refusing anything that would leave MEDIA_ROOT."""
    root = media_root().resolve()
    if not relative or "\x00" in relative or os.path.isabs(relative):
        raise Http404("No such file.")
    path = (root / relative).resolve()
    if root != path and root not in path.parents:
        raise Http404("No such file.")
    return path


def absolute(relative: str) -> Path:
    """Where a media file (named relative to MEDIA_ROOT, as stored in the database) lives."""
    return media_root() / relative


#: What the app's writers name work not finished yet: atomic_path's files and pyramids' staging folders
#: (".<name>.tmp-…") and translations' scratch folders (".scratch-…"). Nothing else starts so.
STAGING_NAME = re.compile(r"^\.(.+\.tmp-|scratch-)")


def sweep_staging(older_than_s: float = 0.0) -> tuple[int, int]:
    """Remove what writers that never finished (a crash) left under MEDIA_ROOT, untouched for
    ``older_than_s``: (entries, bytes) removed. The embedded server sweeps everything as it starts,
    before its workers write anything; elsewhere a day's age keeps clear of writers still at work."""
    limit = time.time() - older_than_s
    removed = freed = 0
    for folder, dirs, files in os.walk(media_root()):
        for name in [d for d in dirs if STAGING_NAME.match(d)]:
            path = Path(folder, name)
            if path.lstat().st_mtime <= limit:
                freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
            dirs.remove(name)  # never walked into: it is gone or still being written
        # a finished pyramid's tile tree (the bulk of the media) was renamed into place whole: nothing to find in it
        dirs[:] = [d for d in dirs if not d.endswith("_files")]
        for name in files:
            path = Path(folder, name)
            if STAGING_NAME.match(name) and path.lstat().st_mtime <= limit:
                freed += path.lstat().st_size
                path.unlink(missing_ok=True)
                removed += 1
    return removed, freed


def write_bytes(relative: str, data: bytes) -> str:
    atomic_write_bytes(absolute(relative), data)
    return relative


def etag_for(path: Path) -> str:
    stat = path.stat()
    return quote_etag(hashlib.blake2s(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode(), digest_size=12).hexdigest())


class StreamedFile(FileResponse):
    """A ``FileResponse`` an ASGI server (daphne) gets in 1 MiB chunks, each read on a worker thread.

    Django's own reads a file's synchronous iterator whole into memory before the first byte
    leaves under ASGI (``StreamingHttpResponse.__aiter__``): a 2 GB data set zip would sit in
    the server's memory per download. WSGI servers and the test client iterate as before.
    """

    chunk_bytes = 1 << 20

    async def __aiter__(self):
        read = sync_to_async(self.file_to_stream.read, thread_sensitive=False)
        while chunk := await read(self.chunk_bytes):
            yield chunk


def send_file(request, relative: str, *, content_type: str | None = None, download_name: str | None = None,
              max_age: int = 0, immutable: bool = False) -> HttpResponse:
    """Answer with one media file the caller has already checked the user may read."""
    path = resolve(relative)
    if not path.is_file():
        raise Http404("No such file.")
    etag = etag_for(path)
    cache = f"private, max-age={max_age}" + (", immutable" if immutable else "")
    if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        response = HttpResponseNotModified()
        response["ETag"], response["Cache-Control"] = etag, cache
        return response
    content_type = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    backend = settings.SENDFILE_BACKEND
    if backend == "nginx":
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.SENDFILE_URL_PREFIX.rstrip("/") + "/" + str(path.relative_to(media_root().resolve()))
    elif backend == "xsendfile":
        response = HttpResponse(content_type=content_type)
        response["X-Sendfile"] = str(path)
    else:
        response = StreamedFile(open(path, "rb"), content_type=content_type)
    if download_name:
        response["Content-Disposition"] = f'attachment; filename="{download_name}"'
    response["ETag"] = etag
    response["Last-Modified"] = http_date(path.stat().st_mtime)
    response["Cache-Control"] = cache
    response["X-Content-Type-Options"] = "nosniff"
    return response
