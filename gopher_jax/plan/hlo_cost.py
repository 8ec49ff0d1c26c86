"""FLOPs of a compiled program with every loop counted as many times as it runs.

XLA's cost analysis (`compiled.cost_analysis()`) visits a while loop's body once: a layer scan of
80 layers, or a pipeline schedule's scan over its slots, is counted as one iteration, so the 280B
recipe's step reports 0.3% of its FLOPs. This module reads the optimized HLO text of the compiled
per-device program, finds each while loop's trip count (XLA's `known_trip_count` annotation where
the backend writes one, else its condition: `i < N` on a counter that starts at a constant and steps
by one, the form `lax.scan` and `fori_loop` lower to), and asks
XLA's own cost analysis (the generic HloCostAnalysis of the CPU client, which gives the TPU
compiler's figure on TPU HLO) for the entry and for each loop body on its own:

    flops(c) = flops_once(c) + sum over loops w in c of  trip(w) * flops(body(w)) - flops_once(body(w))

A loop whose trip count cannot be read is reported by name and the total is `None`: the caller
says it cannot count rather than print a wrong number. Conditionals count their costliest branch
(XLA's rule), so a schedule that runs one of several branches per slot is counted as an upper bound.
Neither jax nor XLA's Python API offers a per-loop count, hence this reading of the HLO text; the
counting itself stays XLA's.
"""
from __future__ import annotations

import re

_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) \(.*\{$")
_INSTR = re.compile(r"^\s*(ROOT )?%?([\w.\-]+) = .*?\b([a-z][\w\-]*)\((.*?)\)(,|$)")
_WHILE = re.compile(r"\bwhile\((%?[\w.\-]+)\), condition=%?([\w.\-]+), body=%?([\w.\-]+)")
_CALLED = re.compile(r"\b(?:to_apply|calls)=%?([\w.\-]+)|branch_computations=\{([^}]*)\}"
                     r"|(?:true|false)_computation=%?([\w.\-]+)")


def _computations(text: str) -> tuple[dict[str, list[str]], dict[str, str], str]:
    """Returns ({computation: its instruction lines}, {computation: its header line without
    ENTRY}, the entry computation's name)."""
    comps, heads, entry, current = {}, {}, None, None
    for line in text.splitlines():
        if current is None:
            m = _HEADER.match(line)
            if m:
                current = m.group(2)
                comps[current], heads[current] = [], line[len(m.group(1) or ""):]
                if m.group(1):
                    entry = current
        elif line.startswith("}"):
            current = None
        else:
            # Stack frames index a table of the original module; the copies made here drop it.
            comps[current].append(re.sub(r" stack_frame_id=\d+", "", line))
    if entry is None:
        raise ValueError("the HLO text has no ENTRY computation")
    return comps, heads, entry


def _instructions(lines: list[str]) -> dict[str, tuple[str, list[str], str]]:
    """Returns {instruction name: (opcode, operand names, full line)}."""
    out = {}
    for line in lines:
        m = _INSTR.match(line)
        if m:
            operands = [o.strip().lstrip("%") for o in m.group(4).split(",") if o.strip()]
            out[m.group(2)] = (m.group(3), operands, line)
    return out


def _resolve(instrs, name: str) -> tuple[str, list[str], str]:
    """Returns the instruction `name` stands for, looking through copies and bitcasts (the
    scheduler's copies of a loop counter or of its start value)."""
    op, operands, line = instrs.get(name, ("", [], ""))
    while op in ("copy", "bitcast") and operands:
        op, operands, line = instrs.get(operands[0], ("", [], ""))
    return op, operands, line


def _constant(instrs, name: str) -> int | None:
    op, _, line = _resolve(instrs, name)
    m = re.search(r"\bconstant\((-?\d+)\)", line) if op == "constant" else None
    return int(m.group(1)) if m else None


def _tuple_index(instrs, name: str) -> int | None:
    op, _, line = _resolve(instrs, name)
    m = re.search(r"index=(\d+)", line) if op == "get-tuple-element" else None
    return int(m.group(1)) if m else None


def trip_count(comps, caller: str, while_line: str) -> int | None:
    """Returns the trip count of the while instruction `while_line` of computation `caller`, or None.

    Reads XLA's `known_trip_count` annotation where the backend writes one (CPU, GPU). Otherwise
    (TPU) recognises the counted loop `lax.scan`/`fori_loop` lower to: the condition's root is
    `get-tuple-element(param, k) < constant(N)`, element k of the initial tuple is a constant
    `start`, and the body's root tuple sets element k to `element k + 1`.
    """
    known = re.search(r'"known_trip_count":\{"n":"(\d+)"', while_line)
    if known:
        return int(known.group(1))
    init, cond, body = _WHILE.search(while_line).groups()
    init = init.lstrip("%")
    cond_i = _instructions(comps[cond])
    root = next((n for n, (_, _, line) in cond_i.items() if line.lstrip().startswith("ROOT")), None)
    if root is None or cond_i[root][0] != "compare" or "direction=LT" not in cond_i[root][2]:
        return None
    lhs, rhs = cond_i[root][1][:2]
    k, limit = _tuple_index(cond_i, lhs), _constant(cond_i, rhs)
    if k is None or limit is None:
        return None
    caller_i = _instructions(comps[caller])
    op, operands, _ = caller_i.get(init, ("", [], ""))
    if op != "tuple" or k >= len(operands):
        return None
    start = _constant(caller_i, operands[k])
    body_i = _instructions(comps[body])
    root = next((n for n, (_, _, line) in body_i.items() if line.lstrip().startswith("ROOT")), None)
    if start is None or root is None or body_i[root][0] != "tuple" or k >= len(body_i[root][1]):
        return None
    step_op, step_args, _ = body_i.get(body_i[root][1][k], ("", [], ""))
    if step_op != "add" or len(step_args) != 2:
        return None
    ks = [_tuple_index(body_i, a) for a in step_args]
    ones = [_constant(body_i, a) for a in step_args]
    if not ((ks[0] == k and ones[1] == 1) or (ks[1] == k and ones[0] == 1)):
        return None
    return max(limit - start, 0)


def _nested(comps, name: str, seen=None) -> list[tuple[str, str, list[str]]]:
    """Returns the loops and conditionals reached from `name` through calls, without entering a
    loop body or a branch: ("while", caller, [while line]) and ("conditional", caller, branches)."""
    seen = set() if seen is None else seen
    if name in seen:
        return []
    seen.add(name)
    out = []
    for line in comps[name]:
        if _WHILE.search(line):
            out.append(("while", name, [line]))
            continue
        if " fusion(" in line:
            continue  # fusions hold no loops
        callees = []
        for m in _CALLED.finditer(line):
            callees += [c.strip().lstrip("%") for c in filter(None, (m.group(1), m.group(3),
                                                                      *(m.group(2) or "").split(",")))]
        callees = [c for c in callees if c in comps]
        if " conditional(" in line:
            out.append(("conditional", name, callees))
        else:
            for callee in callees:
                out += _nested(comps, callee, seen)
    return out


def _cost_as_entry(comps, heads, name: str, client) -> dict:
    """Returns XLA's cost analysis of computation `name` as a program's entry (loops counted once).

    The module header (entry layout, aliasing, schedule) describes the original entry, so it is
    left out; computations keep their order, callees before callers."""
    from jax._src.lib import _jax
    from jaxlib import _hlo

    parts = ["HloModule cost", ""]
    for comp, lines in comps.items():
        parts += [("ENTRY " if comp == name else "") + heads[comp], *lines, "}", ""]
    return _jax.hlo_module_cost_analysis(client, _hlo.hlo_module_from_text("\n".join(parts)))


def _counter(hlo_text: str):
    """(computations, entry, once, total, report): once(c) is XLA's figure for computation c, total(c)
    counts its loops x trip counts (None when a trip count is unreadable); report collects
    "loops", "uncounted_loops" and "upper_bound" (callers) as total() walks."""
    import jax

    real, heads, entry = _computations(hlo_text)
    client = jax.devices("cpu")[0].client
    cache: dict[str, float] = {}
    report = {"loops": [], "uncounted_loops": [], "upper_bound": []}

    def once(name: str) -> float:
        if name not in cache:
            cache[name] = float(_cost_as_entry(real, heads, name, client).get("flops", 0.0))
        return cache[name]

    def total(name: str) -> float | None:
        value = once(name)
        for kind, caller, what in _nested(real, name):
            if kind == "conditional":  # XLA counts the costliest branch; so do we, loops included
                branches = [total(b) for b in what]
                if None in branches:
                    return None
                if max(branches) > 1.01 * min(branches):
                    report["upper_bound"].append(caller)
                value += max(branches) - max(once(b) for b in what)
                continue
            line = what[0]
            body = _WHILE.search(line).group(3)
            n = trip_count(real, caller, line)
            inner = total(body)
            if n is None or inner is None:
                if n is None:
                    report["uncounted_loops"].append(body)
                return None
            report["loops"].append({"body": body, "trip_count": n, "flops_per_trip": inner})
            value += n * inner - once(body)
        return value

    return real, entry, once, total, report


def loop_aware_flops(hlo_text: str) -> dict:
    """Returns {"flops": total with loops x trip counts or None, "flops_once": XLA's figure,
    "loops": [{"body", "trip_count", "flops_per_trip"}], "uncounted_loops": [body names],
    "upper_bound": True when a conditional's branches differ in cost (counted at the costliest)}."""
    _, entry, once, total, report = _counter(hlo_text)
    counted = total(entry)
    return {"flops": counted, "flops_once": once(entry), "loops": report["loops"],
            "uncounted_loops": report["uncounted_loops"], "upper_bound": bool(report["upper_bound"])}


def branch_flops(hlo_text: str) -> list[list[float | None]]:
    """Loop-aware FLOPs of every branch of every conditional in the program (one list per
    conditional, branches in index order: a `lax.switch`'s branch k is entry k). A pipeline step's
    slot switch is priced this way per branch, so its executed FLOPs are the sum over the slots the
    program runs, not the costliest branch times the slot count."""
    real, _, _, total, _ = _counter(hlo_text)
    out = []
    for name, lines in real.items():
        for line in lines:
            if " conditional(" not in line:
                continue
            branches = []
            for m in _CALLED.finditer(line):
                branches += [c.strip().lstrip("%") for c in filter(None, (m.group(1), m.group(3),
                                                                          *(m.group(2) or "").split(",")))]
            branches = [b for b in branches if b in real]
            if branches:
                out.append([total(b) for b in branches])
    return out
