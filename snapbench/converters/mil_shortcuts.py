"""Cheaper ways to compute what coremltools' MIL graph bookkeeping computes, for the duration of a conversion.

Converting a tiny model costs Python overhead in coremltools' MIL program classes, not arithmetic on
weights. Each function here computes exactly what the coremltools 9.0 method it stands in for computes
(same values, same order, same objects touched), only with fewer calls and no throw-away dicts; the
packages come out byte for byte the same (tests/test_conversion_shortcuts.py compares them). They are
installed by `shortcuts()` (entered by runtime.conversion_context) and restored when it exits.
SNAPBENCH_PLAIN_MIL=1 leaves coremltools' own methods in place (to compare, or to rule these out); a
comma-separated list of method names (e.g. `_replace_var,get_flattened_inputs`) leaves only those.

What each saves, CPU seconds of one whole `sdxl-tiny` UNet conversion (latent 16, 5 tokens), see
benchmarks/bench_mil_shortcuts.py and the README's paragraph on conversion speed.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

PLAIN_ENV = "SNAPBENCH_PLAIN_MIL"


def _flat_inputs(op: Any, internal_var: type) -> list[Any]:
    """Operation.get_flattened_inputs without the `inputs` dict: the op's input vars, tuples flattened,
    minus the unset (None) and internal ones, in the order of `op._input_vars` (what `inputs` keeps)."""
    flat: list[Any] = []
    for v in op._input_vars.values():
        if v is None or isinstance(v, internal_var):
            continue
        if isinstance(v, (list, tuple)):
            flat.extend(v)
        else:
            flat.append(v)
    return flat


def _make_get_flattened_inputs(internal_var: type) -> Any:
    def get_flattened_inputs(self: Any) -> list[Any]:
        """Operation.get_flattened_inputs, replaced for one conversion (snapbench.converters.mil_shortcuts).

        The original builds the filtered `inputs` dict (a property, a new dict per call) and then walks it;
        this walks `_input_vars` once with the same filter (not None, not an InternalVar) and the same
        flattening of list/tuple inputs, so the list is the same, element for element. Called ~2.6 M times
        in one sdxl-tiny UNet conversion (by dead-code elimination, op removal and the replaceability sets)."""
        return _flat_inputs(self, internal_var)

    return get_flattened_inputs


def _make_set_upstream(internal_var: type) -> Any:
    def _set_nonreplaceable_vars_upstream(self: Any) -> None:
        """Var._set_nonreplaceable_vars_upstream, replaced for one conversion (snapbench.converters.mil_shortcuts).

        Same rule, same order of checks: no producing op: unchanged; a `shape` op's output: empty (metadata
        stops the propagation); a `constexpr_*` op's output: {itself}; otherwise the union of the sets of
        the op's flattened inputs, or unchanged when the op has none. The original reaches the inputs
        through `get_flattened_inputs` (a dict per call) and the checks through two more method calls; it
        runs for every output of every op added (type inference) and for every var of a block each time a
        `with block:` exits (115 times per UNet conversion: 2.2 M calls)."""
        op = self._op
        if op is None:
            return
        op_type = op.op_type
        if op_type == "shape":
            self.nonreplaceable_vars_upstream = set()
        elif op_type.startswith("constexpr_"):
            self.nonreplaceable_vars_upstream = {self}
        else:
            upstream = [p.nonreplaceable_vars_upstream for p in _flat_inputs(op, internal_var)]
            if upstream:
                self.nonreplaceable_vars_upstream = set.union(*upstream)

    return _set_nonreplaceable_vars_upstream


def _make_propagate(internal_var: type, set_upstream: Any) -> Any:
    def _propagate_nonreplaceable_vars(self: Any) -> None:
        """Block._propagate_nonreplaceable_vars, replaced for one conversion (snapbench.converters.mil_shortcuts).

        The original runs at every `with block:` exit (115 times in one sdxl-tiny UNet conversion) and, for
        every output of every op (nested blocks first, ops in order), resets the var's set of upstream
        `constexpr_*` vars and recomputes it with Var._set_nonreplaceable_vars_upstream: two method calls and
        a flattened-inputs list per var, ~19,000 vars per walk. Here the same walk in the same order
        computes the union of the op's inputs' sets once per op and gives each output its own copy; a `shape`
        output gets a new empty set, a `constexpr_*` output the set of itself (the same rules, see
        `_set_nonreplaceable_vars_upstream`). An output whose producing op is not the op being walked (not
        seen in coremltools' own programs) goes through the reset-and-recompute of the original."""

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
                        o._nonreplaceable_vars_upstream = set()
                        set_upstream(o)
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
        Installed only when the original's source is the one copied (REPLACE_VAR_SOURCE)."""
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


def _targets() -> list[tuple[type, str, Any]]:
    """(class, attribute, replacement) for every shortcut, built against the installed coremltools."""
    from coremltools.converters.mil.mil.block import Block
    from coremltools.converters.mil.mil.operation import Operation
    from coremltools.converters.mil.mil.utils import CacheDoublyLinkedList
    from coremltools.converters.mil.mil.var import InternalVar, Var

    set_upstream = _make_set_upstream(InternalVar)
    targets = [
        (Operation, "get_flattened_inputs", _make_get_flattened_inputs(InternalVar)),
        (Var, "_set_nonreplaceable_vars_upstream", set_upstream),
        (Block, "_propagate_nonreplaceable_vars", _make_propagate(InternalVar, set_upstream)),
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
