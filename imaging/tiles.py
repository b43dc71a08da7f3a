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
