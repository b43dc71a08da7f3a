"""Refuse uploads above UPLOAD_MAX_BYTES while they stream in, before they fill the disk."""
from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload


class UploadTooLarge(Exception):
    pass


class SizeLimitUploadHandler(FileUploadHandler):
    """Counts the bytes of every file in a request; stops the upload once over the limit."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.limit = settings.UPLOAD_MAX_BYTES
        self.seen = 0
        if content_length and content_length > self.limit + 1024 * 1024:
            self.request.upload_too_large = True
            raise StopUpload(connection_reset=False)
        return None

    def receive_data_chunk(self, raw_data, start):
        self.seen += len(raw_data)
        if self.seen > self.limit:
            self.request.upload_too_large = True
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size):
        return None
