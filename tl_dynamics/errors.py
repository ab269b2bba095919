"""The one exception class for bad input: :class:`DynamicsInputError`.

Every check of what a user hands tl-dynamics (an argument, a texts file, a model name, an
output folder, a store) raises a :class:`DynamicsInputError` at the public boundary,
before long work starts, with one wording: ``"<argument> must be <what is expected>;
got <what was given>"`` (or a sentence naming the file and what is wrong with it).
Catch that one class to catch every bad input, as einops users catch ``EinopsError``;
the ``tl-dynamics`` command turns it, and only it, into one line and exit status 2, so
that a genuine bug still shows its traceback.

``DynamicsInputError`` is a ``ValueError``. The few subclasses below are also the
built-in type that Python code expects for that kind of problem, so ``except TypeError``
or ``except FileNotFoundError`` written against earlier versions keeps working:

* :class:`InputTypeError` (``TypeError``): an argument of the wrong type;
* :class:`InputNotFoundError` (``FileNotFoundError``): a file or folder named by the user
  does not exist, or lacks what it must hold;
* :class:`OutputExistsError` (``FileExistsError``): an output folder exists and
  ``overwrite`` was not asked for;
* :class:`HubUnreachableError` (``ConnectionError``): a name that is neither local nor
  reachable on the Hugging Face hub;
* :class:`MissingDependencyError` (``ModuleNotFoundError``): the input needs an optional
  package that is not installed; the message is the ``pip install`` line that adds it.

Example::

    import torch
    import tl_dynamics as tld

    try:
        tld.metrics.velocity(torch.zeros(4, 3))
    except tld.DynamicsInputError as error:
        print(error)  # resid must have 3 dims [batch, sublayer, d_model]; got shape (4, 3)
"""

from __future__ import annotations

__all__ = [
    "DynamicsInputError",
    "HubUnreachableError",
    "InputNotFoundError",
    "InputTypeError",
    "MissingDependencyError",
    "OutputExistsError",
]


class DynamicsInputError(ValueError):
    """Bad input to tl-dynamics; the message names the argument, what it got and
    what is expected."""


class InputTypeError(DynamicsInputError, TypeError):
    """An argument of the wrong type."""


class InputNotFoundError(DynamicsInputError, FileNotFoundError):
    """A file or folder named by the user does not exist or lacks what it must hold."""


class OutputExistsError(DynamicsInputError, FileExistsError):
    """An output folder exists and replacing it was not asked for."""


class HubUnreachableError(DynamicsInputError, ConnectionError):
    """A model or corpus that is neither local nor reachable on the Hugging Face hub."""


class MissingDependencyError(DynamicsInputError, ModuleNotFoundError):
    """The input needs an optional package that is not installed (the message says how
    to install it)."""
