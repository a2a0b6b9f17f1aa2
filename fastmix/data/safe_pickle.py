"""A restricted unpickler for the CIFAR-10/100 "python version" batch files.

``pickle.load`` runs whatever callables a file names, so a crafted ``data_batch_1``
could execute code. CIFAR's files hold only a dict of byte strings, lists of ints and
byte strings, and one uint8 numpy array; a numpy array pickles as three globals
(``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``). Those
three are the only globals :class:`CifarUnpickler` resolves (under either spelling of
numpy's core module, ``numpy.core`` as numpy 1 writes it and ``numpy._core`` as numpy 2
does); every other global, and persistent ids, raise :class:`UnsafePickleError` naming
the file and the global. The containers themselves (dict, list, tuple, bytes, str, int,
float, bool, None) are built by pickle opcodes and need no global.
"""
from __future__ import annotations

import pickle

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

# (module, name) -> object: the exact set a CIFAR python batch needs.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(ValueError):
    """A pickle names a global outside the allowed set (it could run code)."""


class CifarUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals a numpy uint8 array needs."""

    def __init__(self, file, path: str):
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module, name):
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"{self._path}: refusing to unpickle {module}.{name}: a CIFAR batch file holds only dicts, "
                f"lists, bytes, strings, ints and numpy arrays (this file may be corrupt or crafted to run "
                f"code; download the dataset again)")
        return obj

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._path}: refusing a persistent id in a CIFAR batch file")


def load_cifar_pickle(path: str) -> dict:
    """Read one CIFAR python batch file with :class:`CifarUnpickler`.

    Returns the file's dict (keys are ``bytes``, as with ``pickle.load(f, encoding="bytes")``).
    Raises:
        UnsafePickleError (a ValueError): the file names a global outside the allowed set.
        ValueError: the file is not a readable pickle, or does not hold a dict; the message
            names the file.
    """
    with open(path, "rb") as f:
        try:
            obj = CifarUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, MemoryError, TypeError, ValueError, KeyError, IndexError,
                AttributeError, UnicodeDecodeError, OverflowError) as e:
            raise ValueError(f"{path}: not a readable CIFAR batch file ({type(e).__name__}: {e}); "
                             f"download and extract the dataset again") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a CIFAR batch file holds a dict, this one holds {type(obj).__name__}")
    return obj
