"""Serving deep-zoom pyramids: only the DZI descriptor and tile names, checked, with long caching."""
import re

from django.http import Http404

from ssumweb.media import send_file

# "mosaic.dzi" or "mosaic_files/<level>/<col>_<row>.<ext>": nothing else can be asked for.
TILE_NAME = re.compile(r"^(mosaic\.dzi|mosaic_files/\d{1,2}/\d{1,6}_\d{1,6}\.(jpeg|jpg|png))$")


def serve_pyramid(request, pyramid: str, name: str):
    if not pyramid:
        raise Http404("No pyramid yet.")
    if not TILE_NAME.match(name):
        raise Http404("No such tile.")
    content_type = "application/xml" if name.endswith(".dzi") else None
    # Pyramids are written once into a new folder (its name changes when rebuilt): tiles never change.
    return send_file(request, f"{pyramid}/{name}", content_type=content_type, max_age=31536000, immutable=True)


def serve_whole_image_tile(request, pyramid: str, what: str):
    """The pyramid's level whose single tile holds the whole image (a thumbnail), or 404 saying why."""
    from rest_framework.exceptions import NotFound

    from ssumweb.media import absolute

    from .imageio import ImagingError
    from .pyramid import read_dzi, whole_image_level

    if not pyramid:
        raise NotFound(f"This {what} has no pyramid yet.")
    try:
        info = read_dzi(absolute(pyramid))
    except ImagingError as exc:
        raise NotFound(f"This {what}'s pyramid cannot be read.") from exc
    return serve_pyramid(request, pyramid, f"mosaic_files/{whole_image_level(info)}/0_0.{info.format}")
