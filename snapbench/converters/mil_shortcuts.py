"""Cheaper ways to compute what coremltools' MIL graph bookkeeping computes, for the duration of a conversion.

Converting a tiny model costs Python overhead in coremltools' MIL program classes, not arithmetic on
weights. Each function here computes exactly what the coremltools 9.0 method it stands in for computes
(same values, same order, same objects touched), only with fewer calls and no throw-away dicts; the
packages come out byte for byte the same (tests/test_conversion_shortcuts.py compares them). They are
installed by `shortcuts()` (entered by runtime.conversion_context) and restored when it exits.
SNAPBENCH_PLAIN_MIL=1 leaves coremltools' own methods in place (to compare, or to rule these out); a
comma-separated list of method names (e.g. `_replace_var`, `__str__`) leaves only those. One more is not
bookkeeping: coremltools logs whole programs with eager f-strings, so `str()` of a Program or Function
prints it only when the coremltools logger shows debug records.

Kept only where one is worth >= 3% of a conversion's CPU (benchmarks/bench_mil_shortcuts.py --ablate;
CPU seconds inside each method measured in-process, at load ~3 on 2 shared cores). Tried and dropped, each
under 1% of a whole sdxl-tiny UNet once the block walk below no longer calls them per var:
Var._set_nonreplaceable_vars_upstream and Operation.get_flattened_inputs without the `inputs` dict.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

PLAIN_ENV = "SNAPBENCH_PLAIN_MIL"


def _make_propagate(internal_var: type) -> Any:
    def _propagate_nonreplaceable_vars(self: Any) -> None:
        """Block._propagate_nonreplaceable_vars, replaced for one conversion (snapbench.converters.mil_shortcuts).

        The original runs at every `with block:` exit (115 times in one sdxl-tiny UNet conversion) and, for
        every output of every op (nested blocks first, ops in order), resets the var's set of upstream
        `constexpr_*` vars and recomputes it with Var._set_nonreplaceable_vars_upstream: two method calls and
        a flattened-inputs list per var, ~19,000 vars per walk. Here the same walk in the same order
        computes the union of the op's inputs' sets once per op and gives each output its own copy; a `shape`
        output gets a new empty set, a `constexpr_*` output the set of itself (the same rules, see
        `_set_nonreplaceable_vars_upstream`). An output whose producing op is not the op being walked (not
        seen in coremltools' own programs) goes through the reset-and-recompute of the original.
        Saves (whole sdxl-tiny UNet, latent 16, 5 tokens): 5.3 -> 2.5 CPU s inside this method of 30.0
        (split_einsum_v2), 3.1 -> 1.3 of 23.5 (original attention)."""

        def walk(block: Any) -> None:
            for op in block.operations:
                for b in op.blocks:
                    walk(b)
                outputs = op.outputs
                if outputs is None:
                    continue
                op_type = op.op_type
                union: set[Any] | None = None
                for o in outputs:
                    if o._op is not op:
                        o._reset_nonreplaceable_vars_upstream()
                        o._set_nonreplaceable_vars_upstream()
                    elif op_type == "shape":
                        o._nonreplaceable_vars_upstream = set()
                    elif op_type.startswith("constexpr_"):
                        o._nonreplaceable_vars_upstream = {o}
                    else:
                        if union is None:
                            union = set()
                            for v in op._input_vars.values():
                                if v is None or isinstance(v, internal_var):
                                    continue
                                if isinstance(v, (list, tuple)):
                                    for x in v:
                                        union |= x._nonreplaceable_vars_upstream
                                else:
                                    union |= v._nonreplaceable_vars_upstream
                        o._nonreplaceable_vars_upstream = set(union)

        walk(self)

    return _propagate_nonreplaceable_vars


# sha256 (first 16 hex digits) of inspect.getsource(Block._replace_var) in coremltools 9.0, the method
# `_make_replace_var` copies: another version's is left in place rather than replaced by a stale copy.
REPLACE_VAR_SOURCE = "db3ff96afe24193a"


def _uses(op: Any, old_var: Any, internal_var: type) -> bool:
    """Whether `old_var` is one of `op`'s inputs, as Block._replace_var's loop decides it (on the filtered
    `inputs`: not None, not an InternalVar; a Var has no __eq__, so `==` and `in` are identity)."""
    for v in op._input_vars.values():
        if v is None or isinstance(v, internal_var):
            continue
        if v is old_var or (isinstance(v, (list, tuple)) and old_var in v):
            return True
    return False


def _make_replace_var(internal_var: type, linked_list: Any) -> Any:
    def _replace_var(self: Any, old_var: Any, new_var: Any, anchor_op: Any = None, end_op: Any = None,
                     no_check_var_types: bool | None = False) -> int:
        """Block._replace_var (coremltools 9.0), replaced for one conversion (snapbench.converters.mil_shortcuts).

        A line-for-line copy of the original but for one thing: when the uses of `old_var` are replaced
        after an anchor op that is not `old_var`'s producer (the fp16 cast pass and reduce_transposes
        do that thousands of times), the original builds every later op's `inputs` dict and a new
        inputs dict for each, to find the few ops that use `old_var`. Here an op is tested first by
        identity on its raw inputs (`_uses`, the same test), and only an op that uses `old_var` gets the
        original's rebuilt inputs and `set_inputs` call; nested blocks are still visited for every op.
        Installed only when the original's source is the one copied (REPLACE_VAR_SOURCE). Saves (whole
        sdxl-tiny UNet, original attention: reduce_transposes runs) 4.4 -> 3.2 CPU s inside this method (the
        type inference of the ops it does change included) of 23.5; nothing measurable with split_einsum_v2."""
        self._copy_metadata(old_var, new_var)
        self._copy_scope_info(old_var, new_var)

        num_ops_affected = 0
        replace_vars_right_after_old_var = (
            end_op is None
            and len(self.operations) > 0
            and anchor_op is not None
            and anchor_op is old_var.op
        )
        start_idx = end_idx = None

        if replace_vars_right_after_old_var:
            op_list = list(old_var.child_ops)
        else:
            if isinstance(self.operations, list):
                start_idx = self.find_op_id_in_block(anchor_op) + 1 if anchor_op is not None else 0
                end_idx = (
                    self.find_op_id_in_block(end_op)
                    if end_op is not None
                    else len(self.operations) - 1
                )
                op_list = self.operations[start_idx : end_idx + 1]
            else:
                assert isinstance(
                    self.operations, linked_list
                ), f"Expect operations be type of CacheDoublyLinkedList. Got {type(self.operations)}."
                if len(self.operations) == 0 and anchor_op is not None:
                    raise ValueError(f"anchor op {anchor_op} not in the block.")

                start_node = (
                    self.operations.start
                    if anchor_op is None
                    else self.operations._get_node_from_op(anchor_op).next
                )
                cursor = start_node
                op_list = []
                while cursor is not None:
                    op_list.append(cursor.op)
                    if cursor.op is end_op:
                        break
                    cursor = cursor.next

        for op in op_list:
            if _uses(op, old_var, internal_var):  # the shortcut: else the original finds nothing to change
                new_inputs = {}
                for k, v in op.inputs.items():
                    if isinstance(v, (list, tuple)) and old_var in v:
                        new_inputs[k] = tuple(new_var if vv == old_var else vv for vv in v)
                    elif v == old_var:
                        new_inputs[k] = new_var
                    else:
                        new_inputs[k] = v
                num_ops_affected += 1
                op.set_inputs(no_check_var_types=no_check_var_types, **new_inputs)

            for b in op.blocks:
                num_ops_affected += b._replace_var(old_var, new_var)

        for b in list(old_var.consuming_blocks):
            outer_op = b.outer_op

            if outer_op is not None:
                if start_idx is None:
                    start_idx = (
                        self.find_op_id_in_block(anchor_op) + 1 if anchor_op is not None else 0
                    )
                if end_idx is None:
                    end_idx = (
                        self.find_op_id_in_block(end_op)
                        if end_op is not None
                        else len(self.operations) - 1
                    )

            op_to_idx: dict[Any, int] = {}
            while outer_op is not None:
                block = outer_op.enclosing_block
                if block is self:
                    if len(op_to_idx) == 0:
                        for idx, o in enumerate(self.operations):
                            op_to_idx[o] = idx
                    op_idx = op_to_idx[outer_op]
                    if op_idx >= start_idx and op_idx <= end_idx:  # type: ignore[operator]
                        b.replace_block_output_var(old_var, new_var)
                    break
                outer_op = block.outer_op

        if end_op is not None and old_var.op not in op_list:
            return num_ops_affected

        if old_var in self._block_inputs:
            idx = self._block_inputs.index(old_var)
            self._block_inputs = list(self._block_inputs)
            self._block_inputs[idx] = new_var
            self._block_inputs = tuple(self._block_inputs)

        self.replace_block_output_var(old_var, new_var)
        return num_ops_affected

    return _replace_var


@functools.cache
def _source_digest(fn: Any) -> str:
    import hashlib
    import inspect

    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]


def _printed_only_when_debugging(cls: type, original: Callable[..., str]) -> Callable[..., str]:
    """`str()` of a MIL program or function that prints it only when coremltools' logger would show it
    (what the log shows is unchanged; nothing else reads these strings during a conversion).

    coremltools logs the whole program before and after each pass pipeline with f-strings
    (`logger.debug(f"...{prog}")`), which print it whatever the log level: six dumps of every op per
    conversion, about 3% of converting a UNet (6% with transpose reduction, which logs each block twice)."""
    logger = logging.getLogger("coremltools")

    def __str__(self: object, *args: object, **kwargs: object) -> str:
        if logger.isEnabledFor(logging.DEBUG):
            return original(self, *args, **kwargs)
        return f"<{cls.__name__}: printed only with coremltools' debug logging on>"

    return __str__


def _targets() -> list[tuple[type, str, Any]]:
    """(class, attribute, replacement) for every shortcut, built against the installed coremltools."""
    from coremltools.converters.mil.mil.block import Block, Function
    from coremltools.converters.mil.mil.program import Program
    from coremltools.converters.mil.mil.utils import CacheDoublyLinkedList
    from coremltools.converters.mil.mil.var import InternalVar

    targets: list[tuple[type, str, Any]] = [
        (Block, "_propagate_nonreplaceable_vars", _make_propagate(InternalVar)),
        *((cls, "__str__", _printed_only_when_debugging(cls, cls.__dict__["__str__"])) for cls in (Program, Function)),
    ]
    if _source_digest(Block._replace_var) == REPLACE_VAR_SOURCE:
        targets.append((Block, "_replace_var", _make_replace_var(InternalVar, CacheDoublyLinkedList)))
    return targets


@contextlib.contextmanager
def shortcuts() -> Iterator[None]:
    """Install the shortcuts but those SNAPBENCH_PLAIN_MIL names ("1": all); every original is put back on exit."""
    plain = {n.strip() for n in os.environ.get(PLAIN_ENV, "").split(",") if n.strip()}
    saved = []
    try:
        for cls, name, replacement in _targets():
            if "1" in plain or name in plain:
                continue
            saved.append((cls, name, cls.__dict__[name]))
            setattr(cls, name, replacement)
        yield
    finally:
        for cls, name, original in reversed(saved):
            setattr(cls, name, original)
