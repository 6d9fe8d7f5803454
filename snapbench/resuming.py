"""Refusing to resume a run under other settings, in one wording for every resumable command (`train`,
`distill`, `distill-decoder`, `evolve`): each setting that differs, the value the run was started with, what
this command asks, and the exact options that give the stored values back, or that no option does (a default
changed in snapbench since the run started: then only another --out helps).

"Run the same command" is not enough when a default changed between versions (`evolve --lr`'s did): the
command the user types is the same, its settings are not, so the line names the flag to add.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from snapbench.errors import SnapbenchError


@dataclass(frozen=True)
class Flag:
    """How one stored setting is given on the command line: `--name VALUE`; a boolean pair (`off` names the
    flag for False); or an argument `arg` makes from all the stored settings (one flag that sets several of
    them, such as `evolve --eval-budget`)."""

    name: str
    off: str | None = None
    arg: Callable[[Mapping[str, object]], str] | None = None

    def to_give(self, value: object, stored: Mapping[str, object]) -> tuple[str, str]:
        """("add", "--lr 0.0001") or ("leave out", "--prediction-type"): what gives `value` back."""
        if self.off is not None:
            return "add", self.name if value else self.off
        if self.arg is not None:
            return "add", f"{self.name} {self.arg(stored)}"  # written as the command line takes it
        if value is None or value in ((), []):
            return "leave out", self.name  # the option's default (none given) is what the run started with
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        return "add", f"{self.name} {shlex.quote(str(value))}"


@dataclass(frozen=True)
class Difference:
    setting: str  # as the run's state names it: `learning_rate`, `config.train.learning_rate`
    stored: object  # what the run was started with
    asked: object  # what this command asks


def flat(settings: object, prefix: str = "") -> dict[str, object]:
    """A config (a dataclass or a mapping, nested) as dotted keys: `skip.ca`, `config.train.learning_rate`."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        items: Iterable[tuple[str, object]] = ((f.name, getattr(settings, f.name)) for f in dataclasses.fields(settings))
    elif isinstance(settings, Mapping):
        items = settings.items()
    else:
        return {prefix.removesuffix("."): settings}
    found: dict[str, object] = {}
    for key, value in items:
        if (dataclasses.is_dataclass(value) and not isinstance(value, type)) or isinstance(value, Mapping):
            found.update(flat(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def differences(stored: Mapping[str, object], asked: Mapping[str, object],
                same: Callable[[str], bool] = lambda key: False) -> list[Difference]:
    """The settings (flat keys) whose values differ, in key order; `same(key)`: a key that may differ (a
    step count a resumed run goes on to)."""
    return [Difference(k, stored.get(k), asked.get(k)) for k in sorted(set(stored) | set(asked))
            if not same(k) and _normal(stored.get(k)) != _normal(asked.get(k))]


def _normal(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value  # a JSON state holds a tuple as a list


def mismatch_error(out: str | Path, found: list[Difference], flags: Mapping[str, Flag],
                   stored: Mapping[str, object]) -> SnapbenchError:
    """One line: the differing settings with both values, then the options that resume the run (or that no
    option can, for a setting no flag sets), then the way out."""
    shown = ", ".join(f"{d.setting}={d.stored!r} (this command: {d.asked!r})" for d in found)
    add: list[str] = []
    leave: list[str] = []
    fixed: list[str] = []
    for d in found:
        flag = flags.get(d.setting)
        if flag is None:
            fixed.append(d.setting)
            continue
        how, text = flag.to_give(d.stored, stored)
        bucket = add if how == "add" else leave
        if text not in bucket:  # one flag may give several settings (--eval-budget)
            bucket.append(text)
    if fixed:
        return SnapbenchError(f"{out} holds a run started with other settings: {shown}; no option sets "
                              f"{', '.join(fixed)} (a default changed since the run started), so this version "
                              "cannot resume it: pick another --out")
    steps = ([f"add `{' '.join(add)}`"] if add else []) + ([f"leave out {', '.join(leave)}"] if leave else [])
    return SnapbenchError(f"{out} holds a run started with other settings: {shown}; to resume it "
                          f"{' and '.join(steps)}, or pick another --out")


def check_same(out: str | Path, stored: object, asked: object, flags: Mapping[str, Flag],
               same: Callable[[str], bool] = lambda key: False) -> None:
    """Refuse (one line, `mismatch_error`) to resume the run in `out` started with settings `stored` under
    `asked` (dataclasses or mappings, nested; compared as flat keys) where they differ outside `same`."""
    before, now = flat(stored), flat(asked)
    found = differences(before, now, same)
    if found:
        raise mismatch_error(out, found, flags, before)
