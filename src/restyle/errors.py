"""One family of user-facing errors.

Every message is meant to be read by a person: it names the bad field or model and says what to do.
The CLI prints these without a traceback; the HTTP layer maps them to 4xx JSON.
"""


class RestyleError(Exception):
    """Base class of every error restyle reports to its user."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvalidParameterError(RestyleError):
    """A request parameter is out of range or of the wrong form."""

    status_code = 422


class InvalidImageError(RestyleError):
    """An input image (or mask) cannot be read or breaks a size limit."""

    status_code = 400


class UnusableMaskError(InvalidImageError):
    """A readable mask that cannot be used with its photo: another size, or empty (nothing to repaint)."""

    status_code = 422


class NoGarmentFoundError(RestyleError):
    """The segmenter found nothing for the garment prompt(s)."""

    status_code = 422


class ModelNotFoundError(RestyleError):
    """Model weights are neither a local folder nor in the Hugging Face cache."""

    status_code = 503


class ModelLoadError(RestyleError):
    """A model folder exists but is not the kind of model restyle expects."""

    status_code = 500
