"""Matmul FLOPs and collectives of an optimized HLO module, with loop trip counts.

XLA's ``cost_analysis()`` counts a ``while`` body once, so for a step whose layers run
under ``nn.scan`` and whose microbatches run under ``lax.scan`` it reports one
iteration of each loop. This module reads the optimized HLO text
(``compiled.as_text()``) instead:

- every ``dot`` costs 2 · (product of its output dims) · (product of the lhs
  contracting dims), every ``convolution`` 2 · (output elements) · (kernel elements
  / output features): the multiply-adds App. A counts (elementwise work is left out);
- a computation's count is its own instructions plus, for each instruction that calls
  another computation (fusions, calls, async wrappers, custom calls, reduce's
  ``to_apply``), that computation's count; a ``while`` multiplies its body and
  condition by the trip count XLA proved (``backend_config={..."known_trip_count":
  {"n":"44"}}``), else by the bound of the condition's ``compare(i, constant(N))``,
  else once (and says so); a ``conditional`` counts its most expensive branch;
- a Pallas kernel (``custom_call_target="tpu_custom_call"``) counts the FLOPs of its
  ``cost_estimate`` if it has one; without one it is counted as an opaque kernel
  (splash attention's FLOPs are then missing from the total);
- collectives (all-gather, reduce-scatter, all-reduce, all-to-all, collective-permute;
  async ``-start`` forms once, ``-done`` not) are counted the same way: how many run
  per step.

Shapes in a partitioned (SPMD) module are per device, so the counts are per device.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")

_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_ARRAY = re.compile(r"^([a-z][a-z0-9]*)\[([^\]]*)\]")
_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)"?')
_CALLED = re.compile(
  r"\b(calls|to_apply|body|condition|true_computation|false_computation"
  r"|branch_computations|called_computations)=(\{[^}]*\}|%?[\w.\-]+)"
)
_DIMS = re.compile(r"\b(lhs_contracting_dims|rhs_contracting_dims)=\{([\d,\s]*)\}")
_DIM_LABELS = re.compile(r"\bdim_labels=([\w]+)_([\w]+)->([\w]+)")
# A Pallas (Mosaic) kernel: its FLOPs are what its ``cost_estimate`` says, if it has one.
_KERNEL = 'custom_call_target="tpu_custom_call"'
# (libtpu writes the count as a JSON string: "flops":"8388608".)
_COST_ESTIMATE = re.compile(r'\\?"cost_estimate\\?"\s*:\s*\{\s*\\?"flops\\?"\s*:\s*\\?"?(\d+)')
# Instructions whose called computation is the one an earlier ``-start`` already ran.
_NO_RECURSE = ("async-update", "async-done")


@dataclasses.dataclass
class Instruction:
  name: str
  shape: str  # the result's shape text, e.g. "bf16[4,128]{1,0}" or "(s32[], f32[2])"
  opcode: str
  operands: list[str]  # operand names (without %)
  attrs: str  # everything after the operand list


@dataclasses.dataclass
class Counts:
  """Per-execution totals of one computation (callees and trip counts folded in)."""

  flops: float = 0.0
  kernels: float = 0.0  # Pallas/Mosaic custom calls
  kernel_flops: float = 0.0  # the FLOPs of their cost estimates (included in flops)
  opaque_kernels: float = 0.0  # those with no cost estimate
  collectives: dict[str, float] = dataclasses.field(
    default_factory=lambda: dict.fromkeys(COLLECTIVES, 0.0)
  )

  def add(self, other: Counts, times: float = 1.0) -> None:
    self.flops += times * other.flops
    self.kernels += times * other.kernels
    self.kernel_flops += times * other.kernel_flops
    self.opaque_kernels += times * other.opaque_kernels
    for k, v in other.collectives.items():
      self.collectives[k] += times * v


def _balanced(text: str, start: int, open_: str, close: str) -> int:
  """Index just past the bracket that closes ``text[start]`` (== open_)."""
  depth = 0
  for i in range(start, len(text)):
    if text[i] == open_:
      depth += 1
    elif text[i] == close:
      depth -= 1
      if depth == 0:
        return i + 1
  raise ValueError(f"unbalanced {open_}{close} in HLO: {text[start : start + 120]!r}")


def _split_shape(rest: str) -> tuple[str, str]:
  """``"f32[2,3]{1,0} dot(...)..."`` -> (shape text, remainder after it)."""
  if rest.startswith("("):
    end = _balanced(rest, 0, "(", ")")
    return rest[:end], rest[end:].lstrip()
  m = _ARRAY.match(rest)
  if not m:  # token[] and other bare types
    shape, _, tail = rest.partition(" ")
    return shape, tail.lstrip()
  end = m.end()
  if end < len(rest) and rest[end] == "{":
    end = _balanced(rest, end, "{", "}")
  return rest[:end], rest[end:].lstrip()


def _top_level_split(text: str) -> Iterator[str]:
  depth, start = 0, 0
  for i, ch in enumerate(text):
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      yield text[start:i]
      start = i + 1
  if text[start:].strip():
    yield text[start:]


def parse_instruction(line: str) -> Instruction | None:
  m = _INSTR.match(line)
  if not m:
    return None
  name, rest = m.group(1), m.group(2)
  shape, rest = _split_shape(rest)
  op = re.match(r"([\w\-]+)\(", rest)
  if not op:
    return None
  open_at = op.end() - 1
  close_at = _balanced(rest, open_at, "(", ")")
  operands = []
  for part in _top_level_split(rest[open_at + 1 : close_at - 1]):
    refs = re.findall(r"%([\w.\-]+)", part)
    operands.append(refs[-1] if refs else part.strip())
  return Instruction(name, shape, op.group(1), operands, rest[close_at:])


def parse_module(text: str) -> tuple[dict[str, list[Instruction]], str | None]:
  """{computation name: instructions}, and the entry computation's name."""
  comps: dict[str, list[Instruction]] = {}
  entry, current = None, None
  for line in text.splitlines():
    if current is None:
      m = _HEADER.match(line)
      if m:
        current = m.group(2)
        comps[current] = []
        if m.group(1):
          entry = current
      continue
    if line.strip() == "}":
      current = None
      continue
    instr = parse_instruction(line)
    if instr is not None:
      comps[current].append(instr)
  return comps, entry


def dims(shape: str) -> list[int]:
  """Dimensions of an array shape text (``f32[]`` -> [])."""
  m = _ARRAY.match(shape)
  if not m or not m.group(2).strip():
    return []
  return [int(re.sub(r"\D", "", d)) for d in m.group(2).split(",")]


def _int_list(text: str) -> list[int]:
  return [int(x) for x in text.replace(" ", "").split(",") if x]


def dot_flops(instr: Instruction, shapes: dict[str, str]) -> float:
  """2 · output elements · contracted elements of a ``dot``."""
  found = dict(_DIMS.findall(instr.attrs))
  lhs = dims(shapes.get(instr.operands[0], ""))
  contracted = math.prod(lhs[d] for d in _int_list(found.get("lhs_contracting_dims", "")))
  return 2.0 * math.prod(dims(instr.shape)) * contracted


def _window(attrs: str, rank: int) -> list[dict[str, int]]:
  """Per spatial dim: size, stride, pad_lo, pad_hi, lhs_dilate, rhs_dilate."""
  m = re.search(r"\bwindow=\{([^}]*)\}", attrs)
  fields = dict(kv.split("=", 1) for kv in m.group(1).split()) if m else {}

  def per_dim(key: str, default: str) -> list[str]:
    return fields[key].split("x") if key in fields else [default] * rank

  out = []
  for i, (size, stride, pad, lhs_d, rhs_d) in enumerate(
    zip(
      per_dim("size", "1"),
      per_dim("stride", "1"),
      per_dim("pad", "0_0"),
      per_dim("lhs_dilate", "1"),
      per_dim("rhs_dilate", "1"),
    )
  ):
    lo, hi = pad.split("_")
    out.append(
      {
        "dim": i,
        "size": int(size),
        "stride": int(stride),
        "pad_lo": int(lo),
        "pad_hi": int(hi),
        "lhs_dilate": int(lhs_d),
        "rhs_dilate": int(rhs_d),
      }
    )
  return out


def _valid_pairs(n_in: int, n_out: int, w: dict[str, int]) -> int:
  """(output, kernel) position pairs of one spatial dim that read a real input element

  (not padding, not a hole of lhs dilation): what XLA's cost analysis counts.
  """
  count = 0
  last = (n_in - 1) * w["lhs_dilate"]
  for k in range(w["size"]):
    offset = k * w["rhs_dilate"] - w["pad_lo"]
    if w["lhs_dilate"] == 1:  # o·stride + offset in [0, last]: a range of o
      lo = max(0, -(offset // w["stride"]))
      hi = min(n_out - 1, (last - offset) // w["stride"]) if last >= offset else -1
      count += max(0, hi - lo + 1)
    else:
      for o in range(n_out):
        pos = o * w["stride"] + offset
        count += 0 <= pos <= last and pos % w["lhs_dilate"] == 0
  return count


def convolution_flops(instr: Instruction, shapes: dict[str, str]) -> float:
  """2 · multiply-adds of a ``convolution``, padding and dilation holes left out.

  XLA:TPU writes many dots as convolutions (batch dims as spatial windows with padding
  or dilation), so the naive output × kernel count would overstate them. As XLA's
  cost analysis: (input features / feature groups) · output features · (input batch /
  batch groups) · ∏ over spatial dims of the valid (output, kernel) position pairs.
  """
  lhs = dims(shapes.get(instr.operands[0], ""))
  rhs = dims(shapes.get(instr.operands[1], ""))
  out = dims(instr.shape)
  m = _DIM_LABELS.search(instr.attrs)
  if not m or not lhs or not rhs:
    return 0.0
  lhs_l, rhs_l, out_l = m.groups()
  groups = re.search(r"\bfeature_group_count=(\d+)", instr.attrs)
  batch_groups = re.search(r"\bbatch_group_count=(\d+)", instr.attrs)
  fmas = (
    lhs[lhs_l.index("f")]
    // (int(groups.group(1)) if groups else 1)
    * out[out_l.index("f")]
    * lhs[lhs_l.index("b")]
    // (int(batch_groups.group(1)) if batch_groups else 1)
  )
  spatial = sorted(c for c in lhs_l if c.isdigit())
  for w in _window(instr.attrs, len(spatial)):
    c = spatial[w["dim"]]
    fmas *= _valid_pairs(lhs[lhs_l.index(c)], out[out_l.index(c)], w)
  return 2.0 * fmas


def _called(instr: Instruction) -> list[tuple[str, str]]:
  out = []
  for key, value in _CALLED.findall(instr.attrs):
    for name in re.findall(r"%?([\w.\-]+)", value.strip("{}")):
      out.append((key, name))
  return out


@dataclasses.dataclass
class Analysis:
  """Totals of the entry computation, and the loops found on the way."""

  flops: float
  collectives: dict[str, float]
  loops: list[dict]  # {"while": name, "trip_count": n, "source": how it was found}
  opaque_kernels: float  # Pallas kernel launches per step whose FLOPs are not counted
  kernels: float = 0.0  # every Pallas kernel launch per step
  kernel_flops: float = 0.0  # FLOPs of the kernels' cost estimates (part of ``flops``)

  @property
  def unknown_trip_counts(self) -> int:
    return sum(1 for loop in self.loops if loop["source"] == "unknown")


def _condition_bound(cond: list[Instruction]) -> int | None:
  """N of a loop condition ``i < N`` (jax's scan/fori form): its one integer constant."""
  consts = [
    int(instr.operands[0])
    for instr in cond
    if instr.opcode == "constant" and re.match(r"^[su]\d+\[\]", instr.shape)
  ]
  return consts[0] if len(consts) == 1 else None


def analyze(text: str, *, use_trip_counts: bool = True) -> Analysis:
  """Matmul FLOPs and collectives per execution of the module's entry computation.

  ``use_trip_counts=False`` counts every loop body once, as ``cost_analysis`` does.
  """
  comps, entry = parse_module(text)
  if entry is None:
    raise ValueError("no ENTRY computation in the HLO text")
  memo: dict[str, Counts] = {}
  loops: list[dict] = []

  def trip_count(instr: Instruction) -> tuple[int, str]:
    m = _TRIP.search(instr.attrs)
    if m:
      return int(m.group(1)), "known_trip_count"
    cond = dict(_called(instr)).get("condition")
    bound = _condition_bound(comps.get(cond, [])) if cond else None
    if bound is not None:
      return bound, "condition"
    return 1, "unknown"

  def count(name: str, stack: tuple[str, ...] = ()) -> Counts:
    if name in memo:
      return memo[name]
    if name in stack or name not in comps:
      return Counts()
    total = Counts()
    shapes = {i.name: i.shape for i in comps[name]}
    for instr in comps[name]:
      if instr.opcode == "dot":
        total.flops += dot_flops(instr, shapes)
      elif instr.opcode == "convolution":
        total.flops += convolution_flops(instr, shapes)
      elif instr.opcode == "custom-call" and _KERNEL in instr.attrs:
        total.kernels += 1
        estimate = _COST_ESTIMATE.search(instr.attrs)
        if estimate:
          total.flops += float(estimate.group(1))
          total.kernel_flops += float(estimate.group(1))
        else:
          total.opaque_kernels += 1
      base = instr.opcode.removesuffix("-start")
      if base in COLLECTIVES and not instr.opcode.endswith("-done"):
        total.collectives[base] += 1
      if instr.opcode in _NO_RECURSE:
        continue
      called = _called(instr)
      if instr.opcode == "while":
        n, source = trip_count(instr)
        loops.append({"while": instr.name, "trip_count": n, "source": source})
        times = n if use_trip_counts else 1
        for _, callee in called:
          total.add(count(callee, (*stack, name)), times)
      elif instr.opcode == "conditional":
        branches = [count(c, (*stack, name)) for _, c in called]
        if branches:
          total.add(max(branches, key=lambda c: c.flops))
      else:
        for _, callee in called:
          total.add(count(callee, (*stack, name)))
    memo[name] = total
    return total

  result = count(entry)
  return Analysis(
    result.flops,
    dict(result.collectives),
    loops,
    result.opaque_kernels,
    result.kernels,
    result.kernel_flops,
  )
