"""Exceptions raised by the harness package.

Exception tree::

    HarnessError                 base of everything the harness raises on purpose
    ├── ConfigError              a config file or value is invalid (names file and key path)
    ├── InputError               a problems/samples/results input cannot be used at all
    │                            (names the file, and the line where there is one)
    └── NoTestsError             the TRL reward found no column to take tests from in any row
                                 (names the columns it looked for; also a LookupError)

A single malformed record inside an otherwise readable input is *not* an exception:
it is reported as an :class:`InputIssue` and skipped, so one bad line never sinks a batch.
Program failures are never exceptions either: they come back as verdicts.
"""

from __future__ import annotations

__all__ = ["ConfigError", "HarnessError", "InputError", "NoTestsError"]


class HarnessError(Exception):
    """Base class of every error the harness raises deliberately."""


class ConfigError(HarnessError, ValueError):
    """An invalid configuration value or file.

    Args:
        message: what is wrong, e.g. ``"must be >= 1, got 0"``.
        key: dotted key path of the offending field, e.g. ``"pool.size"`` (may be empty).
        source: the config file the value came from (may be empty).
        problems: every ``(key path, message)`` found when a file has several; default
            ``[(key, message)]``. Each is one line of the message.
    """

    def __init__(self, message: str, key: str = "", source: str = "",
                 problems: list[tuple[str, str]] | None = None) -> None:
        self.message = message
        self.key = key
        self.source = source
        self.problems = problems if problems is not None else [(key, message)]
        super().__init__(self._render())

    def _render(self) -> str:
        return "\n".join(": ".join(p for p in (self.source, key, message) if p) for key, message in self.problems)

    def located(self, key_prefix: str = "", source: str = "") -> ConfigError:
        """Return a copy whose key paths are prefixed and whose source is filled in.

        Args:
            key_prefix: section path to put in front of each key (``"pool"``).
            source: file name, used only when the error has none yet.

        Returns:
            A new :class:`ConfigError` with the fuller location.
        """
        problems = [(".".join(p for p in (key_prefix, key) if p), message) for key, message in self.problems]
        return ConfigError(problems[0][1], problems[0][0], self.source or source, problems)

    def __str__(self) -> str:
        return self._render()


class InputError(HarnessError, ValueError):
    """An input file cannot be used (missing, unreadable, wrong format as a whole).

    Args:
        message: what is wrong.
        path: the file concerned (may be empty).
        line: 1-based line number, when one line is to blame.
    """

    def __init__(self, message: str, path: str = "", line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        loc = path if line is None else f"{path}:{line}"
        super().__init__(f"{loc}: {message}" if loc else message)


class NoTestsError(HarnessError, LookupError):
    """No row of a reward batch has a column the tests can come from (a wiring mistake).

    The message names the columns looked for and the ones the batch has. A batch where only
    some rows lack tests is not an error: those rows get ``None``.
    """
