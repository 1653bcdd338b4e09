"""The errors a user can fix, in one hierarchy.

Every problem caused by input, settings, files or the environment (not by a
bug in pneumokit) is a ``PneumokitError`` whose message says what is wrong,
names the file or value, and says what to do. The command line prints exactly
these as one line and exits 1; anything else is a bug and keeps its traceback.

Errors about arguments also derive from ``ValueError`` so that callers who
catch ``ValueError`` keep working.
"""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its whitespace collapsed), for one-line reports."""
    return " ".join(str(exc).split())


class PneumokitError(Exception):
    """A problem the user can fix; the message says what and how."""


class ConfigError(PneumokitError, ValueError):
    """A setting or argument is out of range or does not fit the data."""


class DatasetError(PneumokitError, ValueError):
    """The dataset cannot be used as it is; the message lists every problem and the fix."""


class ImageDecodeError(PneumokitError, ValueError):
    """A file cannot be decoded as an image."""


class OutOfScopeError(PneumokitError, ValueError):
    """An input the model was never meant to see (not a frontal chest X-ray): no label for it."""


class CatalogError(PneumokitError, ValueError):
    """A record is invalid, or a name is not in the catalog."""


class TrainingError(PneumokitError):
    """Training gave no usable model (e.g. it diverged); the message says what to change."""


class PluginError(PneumokitError):
    """A plugin's code failed; the message names the plugin."""


class RegistryError(PneumokitError):
    """A registry operation cannot be done; the message says why and what to do."""


class IntegrityError(RegistryError):
    """An artifact does not match what its metadata records."""


class ModelFileError(PneumokitError, ValueError):
    """An ONNX file cannot be used: unreadable, not pneumokit's, or its metadata is invalid."""


class ExportError(PneumokitError, RuntimeError):
    """The export failed; nothing was written."""


class ResumeError(PneumokitError, ValueError):
    """A run folder cannot be resumed with these settings."""


class DeviceError(PneumokitError, RuntimeError):
    """The requested device or execution provider is not available."""


class BackendMissingError(PneumokitError, ImportError):
    """TensorFlow or onnxruntime is not installed."""


class WeightsUnavailableError(PneumokitError, RuntimeError):
    """Pretrained weights could not be downloaded or found."""
