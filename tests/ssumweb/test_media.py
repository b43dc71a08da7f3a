"""Media files: sending streams a file under ASGI instead of reading it whole first."""

import asyncio
import os
import warnings

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.http import Http404
from django.test import RequestFactory

from ssumweb.media import StreamedFile, resolve, send_file


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.SENDFILE_BACKEND = "django"
    return tmp_path


def _sent_over_asgi(response):
    """What an ASGI server sends for ``response``: the body messages, through Django's handler."""
    messages = []

    async def send(message):
        messages.append(message)

    asyncio.run(ASGIHandler().send_response(response, send))
    response.close()  # as the handler does once the body is out
    return [m.get("body", b"") for m in messages if m["type"] == "http.response.body"]


def test_a_file_goes_out_in_chunks_under_asgi_never_read_whole(media):
    data = os.urandom(3 * StreamedFile.chunk_bytes + 12345)
    (media / "mosaics").mkdir()
    (media / "mosaics" / "master.tif").write_bytes(data)
    response = send_file(RequestFactory().get("/"), "mosaics/master.tif")
    reads = []
    read = response.file_to_stream.read
    response.file_to_stream.read = lambda n=-1: reads.append(n) or read(n)
    with warnings.catch_warnings():
        # Django warns exactly when it reads a synchronous iterator whole into memory
        warnings.filterwarnings("error", message="StreamingHttpResponse must consume synchronous iterators")
        body = _sent_over_asgi(response)
    assert b"".join(body) == data
    assert reads and max(reads) == StreamedFile.chunk_bytes  # never one read of the whole file
    assert response.file_to_stream.closed
    assert response["Content-Length"] == str(len(data))


def test_the_test_client_and_wsgi_still_iterate_it(media):
    (media / "a.bin").write_bytes(b"x" * 10_000)
    response = send_file(RequestFactory().get("/"), "a.bin")
    assert b"".join(response.streaming_content) == b"x" * 10_000


@pytest.mark.parametrize("name", ["../secret", "/etc/passwd", "a/../../b", "", "a\x00b"])
def test_paths_outside_media_root_are_refused(media, name):
    with pytest.raises(Http404):
        resolve(name)


def test_what_a_crash_left_half_written_is_swept_and_nothing_else(media):
    from ssumweb.media import sweep_staging

    root = media
    kept = [root / "scans/1/frames/000000.tif", root / "sem/1/2/pyramid-ab/mosaic.dzi", root / ".hidden-note"]
    left = [root / "scans/1/frames/.000001.tif.tmp-x1y2.tif",  # atomic_path's
            root / "sem/1/2/.pyramid-cd.tmp-9z/mosaic_files/0/0_0.jpeg",  # a pyramid's staging folder
            root / "scans/1/translations/3/.scratch-k2/sem.npy"]  # a translation's scratch
    for path in kept + left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    assert sweep_staging(older_than_s=3600) == (0, 0)  # all of it new: a writer may still be at it
    assert sweep_staging() == (3, 30)
    assert all(path.exists() for path in kept)
    assert not any(path.exists() for path in left)
    assert not (root / "sem/1/2/.pyramid-cd.tmp-9z").exists() and not (root / "scans/1/translations/3/.scratch-k2").exists()
