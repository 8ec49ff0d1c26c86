"""A sweep spec: the base gin stack, named axes of overrides, optional zips, a baseline arm.

A spec is a small gin-native file (parsed with gin's own parser; nothing is registered) or the same
thing from flags. Example (gin_configs/sweeps/positions.gin):

    sweep.base_gin_files = ['gin_configs/runs/pretrain.gin', 'gin_configs/models/tiny.gin']
    sweep.base_params = ['train.steps = 100']
    sweep.axes = {
        'ModelConfig.position': ['relative', 'rope', 'alibi'],
        'train.seed': [0, 1, 2],
    }
    sweep.baseline = 'position=relative'

An axis is either
- named by a gin parameter ('train.seed', 'ModelConfig.position'): each value v becomes the binding
  `NAME = v`, labelled by v;
- or named freely ('block'): each value is a gin file ('gin_configs/ablations/parallel_block.gin',
  labelled by its stem), a binding ('ModelConfig.d_ff = 1024'), or, as a dict, label -> a file, a
  binding or a list of them (`[]` = no override): {'serial': [], 'parallel': 'ablations/parallel_block.gin'}.
`sweep.zip = [['a', 'b']]` makes axes a and b vary together (equal lengths) instead of crossing.
The seed axis (`sweep.seed_axis`, default 'train.seed') tells seeds from arms: an arm is one value of
every other axis, and `compare` pairs its runs with the baseline's by seed.
"""
from __future__ import annotations

import dataclasses
import os

SEED_AXIS = "train.seed"
_SPEC_FIELDS = ("base_gin_files", "base_params", "axes", "zip", "baseline", "seed_axis")


class SweepSpecError(ValueError):
    """A spec that cannot be expanded; the message names the axis or value and the fix."""


@dataclasses.dataclass(frozen=True)
class AxisValue:
    """One value of an axis: its label and the gin files / bindings it adds."""

    label: str
    gin_files: tuple[str, ...] = ()
    params: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Axis:
    """A named axis and its values, in order."""

    name: str
    values: tuple[AxisValue, ...]

    @property
    def short(self) -> str:
        """The axis name as it appears in run and arm names ('train.seed' -> 'seed')."""
        return self.name.rsplit(".", 1)[-1]


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """The whole sweep before expansion (see the module docstring)."""

    base_gin_files: tuple[str, ...]
    base_params: tuple[str, ...] = ()
    axes: tuple[Axis, ...] = ()
    zip: tuple[tuple[str, ...], ...] = ()
    baseline: dict = dataclasses.field(default_factory=dict)  # {axis short or full name: label}
    seed_axis: str = SEED_AXIS


def _is_param_name(name: str) -> bool:
    return "." in name and "=" not in name and not name.endswith(".gin") and " " not in name.strip()


def _override(axis: str, item) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Returns (gin files, bindings) of one override: a .gin path, a binding, or a list of them."""
    if isinstance(item, (list, tuple)):
        files, params = [], []
        for x in item:
            f, p = _override(axis, x)
            files += f
            params += p
        return tuple(files), tuple(params)
    if isinstance(item, str) and item.strip().endswith(".gin"):
        return (item.strip(),), ()
    if isinstance(item, str) and "=" in item:
        return (), (item.strip(),)
    raise SweepSpecError(
        f"axis {axis!r}: value {item!r} is neither a gin file (ending in .gin) nor a binding ('X.y = v'). "
        f"Name the axis by a gin parameter to sweep literals (e.g. 'ModelConfig.position': ['rope', 'alibi']), "
        f"or use a dict label -> override, with [] for no override: {{'relative': [], 'rope': 'ablations/rope.gin'}}")


def _label_of(item) -> str:
    if isinstance(item, str) and item.strip().endswith(".gin"):
        return os.path.splitext(os.path.basename(item.strip()))[0]
    if isinstance(item, str) and "=" in item:
        return item.split("=", 1)[1].strip().strip("'\"")
    return "+".join(_label_of(x) for x in item) if isinstance(item, (list, tuple)) and item else "base"


def make_axis(name: str, values) -> Axis:
    """Returns the Axis for `name` from a list of values or a dict label -> override."""
    if isinstance(values, dict):
        out = [AxisValue(str(label), *_override(name, ov)) for label, ov in values.items()]
    elif isinstance(values, (list, tuple)):
        if _is_param_name(name):
            out = [AxisValue(str(v), (), (f"{name}={v!r}",)) for v in values]
        else:
            out = [AxisValue(_label_of(v), *_override(name, v)) for v in values]
    else:
        raise SweepSpecError(f"axis {name!r}: values must be a list or a dict, got {values!r}")
    if not out:
        raise SweepSpecError(f"axis {name!r} has no values")
    return Axis(name, tuple(out))


def parse_baseline(text) -> dict:
    """'position=relative,block=serial' (or a dict) -> {'position': 'relative', 'block': 'serial'}."""
    if not text:
        return {}
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    out = {}
    for part in str(text).split(","):
        if "=" not in part:
            raise SweepSpecError(f"baseline {text!r}: {part!r} is not AXIS=LABEL (e.g. position=relative)")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip().strip("'\"")
    return out


def from_mapping(fields: dict, where: str = "spec") -> SweepSpec:
    """Builds a SweepSpec from {field: value} (the `sweep.*` bindings of a spec file)."""
    unknown = sorted(set(fields) - set(_SPEC_FIELDS))
    if unknown:
        raise SweepSpecError(f"{where}: unknown field(s) {['sweep.' + u for u in unknown]}; known: "
                             f"{['sweep.' + f for f in _SPEC_FIELDS]}")
    base = fields.get("base_gin_files") or ()
    if isinstance(base, str):
        base = (base,)
    params = fields.get("base_params") or ()
    if isinstance(params, str):
        params = (params,)
    axes_in = fields.get("axes") or {}
    if not isinstance(axes_in, dict):
        raise SweepSpecError(f"{where}: sweep.axes must be a dict axis -> values, got {axes_in!r}")
    axes = tuple(make_axis(str(n), v) for n, v in axes_in.items())
    zips = tuple(tuple(str(a) for a in z) for z in (fields.get("zip") or ()))
    spec = SweepSpec(tuple(base), tuple(params), axes, zips, parse_baseline(fields.get("baseline")),
                     fields.get("seed_axis") or SEED_AXIS)
    check(spec)
    return spec


def check(spec: SweepSpec) -> None:
    """Raises SweepSpecError if zips or the baseline name axes or labels the spec lacks."""
    names = [a.name for a in spec.axes]
    by_name = {a.name: a for a in spec.axes}
    seen = set()
    for z in spec.zip:
        missing = [a for a in z if a not in by_name]
        if missing:
            raise SweepSpecError(f"sweep.zip names axes {missing} that are not in sweep.axes {names}")
        if len({len(by_name[a].values) for a in z}) != 1:
            raise SweepSpecError(f"sweep.zip {list(z)}: zipped axes need equal lengths, got "
                                 f"{[len(by_name[a].values) for a in z]}")
        if seen & set(z):
            raise SweepSpecError(f"sweep.zip: axis {sorted(seen & set(z))} is in two zips")
        seen |= set(z)
    for a in spec.axes:  # a zipped axis may repeat labels (budget 1e12 with several sizes); others may not
        labels = [v.label for v in a.values]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup and a.name not in seen:
            raise SweepSpecError(f"axis {a.name!r}: labels {dup} repeat; give each value its own label (use a dict)")
    for key, label in spec.baseline.items():
        axis = find_axis(spec, key)
        if label not in [v.label for v in axis.values]:
            raise SweepSpecError(f"baseline {key}={label}: axis {axis.name!r} has labels "
                                 f"{[v.label for v in axis.values]}")


def find_axis(spec: SweepSpec, key: str) -> Axis:
    """Returns the axis called `key` (full or short name) or raises naming the known ones."""
    for a in spec.axes:
        if key in (a.name, a.short):
            return a
    raise SweepSpecError(f"no axis {key!r}; the spec's axes are {[a.name for a in spec.axes]}")


class _LiteralsOnly:
    """gin parser delegate for spec files: values are literals; references and macros are refused."""

    def configurable_reference(self, scoped_name, evaluate):
        raise SweepSpecError(f"spec files hold literal values only, not @{scoped_name}")

    def macro(self, name):
        raise SweepSpecError(f"spec files hold literal values only, not %{name}")


def load_spec(path: str) -> SweepSpec:
    """Parses a spec file (`sweep.*` bindings in gin syntax); returns the SweepSpec."""
    from gin import config_parser

    from gopher_jax.gin_utils import resolve_gin_file
    from gopher_jax.train import workdir_fs

    text = workdir_fs.read_text(path if workdir_fs.scheme(path) else resolve_gin_file(path))
    fields = {}
    for stmt in config_parser.ConfigParser(text, _LiteralsOnly()):
        if not isinstance(stmt, config_parser.BindingStatement) or stmt.selector != "sweep" or stmt.scope:
            raise SweepSpecError(f"{path}:{stmt.location.line_num}: a spec file holds only `sweep.FIELD = value` "
                                 f"lines (fields: {list(_SPEC_FIELDS)}); base gin files go in sweep.base_gin_files")
        fields[stmt.arg_name] = stmt.value
    return from_mapping(fields, where=path)


def parse_axis_flag(text: str) -> Axis:
    """`--axis` flag: 'train.seed=0,1,2' (gin parameter axis: literals) or
    'position=relative:,rope:ablations/rope.gin,alibi:ablations/alibi.gin' (label:override, '' = none)."""
    import ast

    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise SweepSpecError(f"--axis {text!r} is not NAME=V1,V2,... (e.g. train.seed=0,1,2)")
    items = [x.strip() for x in rest.split(",")]
    name = name.strip()
    if _is_param_name(name):
        def lit(x):
            try:
                return ast.literal_eval(x)
            except (ValueError, SyntaxError):
                return x  # a bare word: a string
        return make_axis(name, [lit(x) for x in items])
    values = {}
    for x in items:
        label, colon, ov = x.partition(":")
        if colon:
            values[label] = [o for o in ov.split("+") if o]
        else:
            values[_label_of(x)] = x
    return make_axis(name, values)


def from_flags(gin_files, gin_params, axis_flags, zip_flags=(), baseline="", seed_axis=SEED_AXIS) -> SweepSpec:
    """Builds a SweepSpec from `gopher-jax sweep` flags (see parse_axis_flag)."""
    axes = tuple(parse_axis_flag(a) for a in axis_flags)
    spec = SweepSpec(tuple(gin_files), tuple(gin_params), axes,
                     tuple(tuple(z.split(",")) for z in zip_flags), parse_baseline(baseline), seed_axis)
    check(spec)
    return spec
