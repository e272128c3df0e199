"""Every error docdesk raises.

The tree::

    DocdeskError
    ├── ConfigurationError (ValueError)    a setting is missing or unsafe
    ├── NotFound (LookupError)             no such document, version or blob
    ├── InvalidRequest (ValueError)        the caller sent something malformed
    │   ├── UnsupportedFormat              an extension docdesk cannot handle
    │   ├── FormatMismatch                 bytes that are not what they claim
    │   └── TooLarge                       over a size cap
    ├── TokenError (PermissionError)       missing, forged or expired JWT
    ├── Forbidden (PermissionError)        a valid caller asking for the wrong thing
    ├── DownloadError                      fetching a Document Server URL
    │   ├── DownloadRefused                the URL breaks the download policy
    │   └── DownloadFailed                 the network or the server failed us
    ├── DocumentServerError                the DS did not answer, or refused
    │   └── CaptureTimeout                 no callback came back for a capture
    ├── TransferError                      ``docdesk transfer`` cannot go on
    │   └── TransferConflict               the target is not a copy of the source
    └── BackendError                       storage or catalog trouble
        ├── StorageError (OSError)
        └── CatalogError

Errors that become HTTP answers carry ``status_code`` and a short ``code`` for
the JSON body. ``transient`` says whether trying the same request again later
may succeed: on the callback endpoint a transient error answers HTTP 503 so
the Document Server retries, any other answers ``{"error": 1}``.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CaptureTimeout",
    "CatalogError",
    "ConfigurationError",
    "DocdeskError",
    "DocumentServerError",
    "DownloadError",
    "DownloadFailed",
    "DownloadRefused",
    "Forbidden",
    "FormatMismatch",
    "InvalidRequest",
    "NotFound",
    "StorageError",
    "TokenError",
    "TooLarge",
    "TransferConflict",
    "TransferError",
    "UnsupportedFormat",
]


class DocdeskError(Exception):
    """The root of every docdesk error."""

    status_code: int = 500
    code: str = "internal_error"
    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(DocdeskError, ValueError):
    """A setting is missing, malformed or unsafe; start-up stops."""

    code = "configuration_error"


class NotFound(DocdeskError, LookupError):
    status_code = 404
    code = "not_found"


class InvalidRequest(DocdeskError, ValueError):
    status_code = 400
    code = "invalid_request"


class UnsupportedFormat(InvalidRequest):
    status_code = 415
    code = "unsupported_format"


class FormatMismatch(InvalidRequest):
    """The bytes do not match the format their extension names."""

    status_code = 422
    code = "format_mismatch"


class TooLarge(InvalidRequest):
    status_code = 413
    code = "too_large"


class TokenError(DocdeskError, PermissionError):
    """A JWT is missing, forged, expired or signed the wrong way."""

    status_code = 401
    code = "invalid_token"


class Forbidden(DocdeskError, PermissionError):
    """The caller is who it says, but may not do this."""

    status_code = 403
    code = "forbidden"


class DownloadError(DocdeskError):
    status_code = 502
    code = "download_error"


class DownloadRefused(DownloadError):
    """The URL breaks the policy: wrong origin, scheme, address or a redirect.

    Asking again gives the same answer, so it is not transient.
    """

    code = "download_refused"


class DownloadFailed(DownloadError):
    """The download broke off, timed out or the server answered an error.

    Transient: the Document Server regenerates its signed links on each
    retry, so a retry may well succeed.
    """

    code = "download_failed"
    transient = True


class DocumentServerError(DocdeskError):
    """The Document Server could not be reached, or refused what we asked."""

    status_code = 502
    code = "document_server_error"
    transient = True


class CaptureTimeout(DocumentServerError):
    """The DS took a force save but no callback brought its file in time.

    Nothing was saved for it; a late callback still saves as usual.
    """

    status_code = 504
    code = "capture_timeout"


class BackendError(DocdeskError):
    status_code = 503
    code = "backend_unavailable"
    transient = True


class StorageError(BackendError, OSError):
    code = "storage_unavailable"


class CatalogError(BackendError):
    code = "catalog_unavailable"

    @classmethod
    def of(cls, exc: Exception) -> CatalogError:
        """The failure of a database driver, named by its kind alone.

        Its message may quote SQL with the values in it: never shown.
        """
        return cls(f"the catalog failed: {type(exc).__name__}")


class TransferError(DocdeskError):
    """The transfer cannot go on; the message says why and what to do."""

    code = "transfer_error"


class TransferConflict(TransferError):
    """The target holds different data under the same ids: it is not a copy.

    Raised before anything is written.
    """

    code = "transfer_conflict"
