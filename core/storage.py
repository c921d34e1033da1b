"""Private file storage: uploads and generated files never have a public URL.

Two backends, one contract, chosen by the settings (`STORAGES["default"]`):

* `PrivateFileSystemStorage` (local, test, a single host): no URL at all. Asking it for one
  is a bug and fails loudly instead of returning a guessable path; the owner-checked API
  views stream the file themselves.
* `PrivateS3Storage` (production: S3 or an S3-compatible store): every object is written
  private, and the only URL it hands out is a pre-signed GET that expires after
  `querystring_expire` seconds, so a leaked link stops working on its own.

The download views call `private_download()` after their owner check: it redirects (302) to a
pre-signed URL when the storage can sign one, so the bytes go from the object store to the
client and never through a gunicorn worker, and streams the file otherwise.
"""

from typing import IO, Any, Protocol, runtime_checkable

from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, Storage, default_storage
from django.http import FileResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header
from storages.backends.s3 import S3Storage


class PrivateFileSystemStorage(FileSystemStorage):
    def url(self, name: str | None) -> str:
        raise ValueError(
            "private files are not accessible via a URL; stream them through an owner-checked view"
        )


@runtime_checkable
class SignsDownloads(Protocol):
    def signed_download_url(self, name: str, *, filename: str, content_type: str) -> str: ...


class PrivateS3Storage(S3Storage):
    """Private objects in S3-compatible storage, readable only through short-lived signed URLs."""

    def get_default_settings(self) -> dict[str, Any]:
        defaults: dict[str, Any] = super().get_default_settings()
        defaults.update(
            # Written private explicitly, whatever the bucket's default. A bucket with ACLs
            # disabled ("bucket owner enforced") rejects any ACL: pass default_acl=None there,
            # and its Block Public Access setting keeps the objects private.
            default_acl="private",
            querystring_auth=True,
            querystring_expire=120,
            # Like the filesystem storage: never replace an existing object silently; a name
            # that is taken gets a suffix, and callers store the name `save` returns.
            file_overwrite=False,
            signature_version="s3v4",
        )
        return defaults

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        # A custom domain (a CDN) makes django-storages build plain, unsigned URLs.
        if self.custom_domain or not self.querystring_auth:
            raise ImproperlyConfigured(
                "PrivateS3Storage serves private files: pre-signed URLs only "
                "(querystring_auth=True, no custom_domain)"
            )

    def signed_download_url(self, name: str, *, filename: str, content_type: str) -> str:
        """A GET URL for `name` that expires after `querystring_expire` seconds.

        The object store answers it with the download headers the streaming view would send.
        """
        return str(
            self.url(
                name,
                parameters={
                    "ResponseContentDisposition": content_disposition_header(True, filename),
                    "ResponseContentType": content_type,
                },
            )
        )


def private_download(
    name: str, *, filename: str, content_type: str, storage: Storage | None = None
) -> HttpResponseBase:
    """The response for an owner-checked download of the private file `name`.

    A 302 to a short-lived pre-signed URL where the storage can sign one (object storage),
    the streamed file otherwise (the local filesystem).
    """
    storage = storage if storage is not None else default_storage
    if isinstance(storage, SignsDownloads):
        response: HttpResponseBase = HttpResponseRedirect(
            storage.signed_download_url(name, filename=filename, content_type=content_type)
        )
        # The URL is a bearer credential until it expires: no shared cache may keep it.
        response["Cache-Control"] = "private, no-store"
        return response
    handle: IO[bytes] = storage.open(name, "rb")
    return FileResponse(handle, as_attachment=True, filename=filename, content_type=content_type)
