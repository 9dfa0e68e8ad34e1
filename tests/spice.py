"""ngspice harness for the crossbar IR-drop circuit (see ``xbarlab.circuits``): netlist writer and batch runner.

The netlist is the contract circuit: ``V<i>`` sources, ``r_driver`` into row node (i, 0), ``r_wire_row`` along rows,
device resistors ``1/G[i, j]`` from row node (i, j) to column node (i, j), ``r_wire_col`` along columns, and
``r_sense`` from column node (M−1, j) to a 0 V source ``VS<j>`` whose current is the output I[j] (A). A zero
resistance is written as a 0 V voltage source (an exact short in modified nodal analysis); a zero conductance
(an open device) is omitted. One ngspice process runs ``.op`` once per input vector (``alter`` between runs).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NGSPICE_MISSING = (
    "ngspice is not installed (needed by the circuit validation tests): run `make sysdeps` or `apt-get install ngspice`"
)


def ngspice_path() -> str | None:
    """Path of the ngspice executable, or None."""
    return shutil.which("ngspice")


def _branch(lines: list[str], name: str, a: str, b: str, r_ohm: float) -> None:
    if r_ohm == 0.0:
        lines.append(f"V{name} {a} {b} DC 0")
    else:
        lines.append(f"R{name} {a} {b} {r_ohm!r}")


def crossbar_netlist(
    G: np.ndarray,
    volts: np.ndarray,
    *,
    r_driver: float,
    r_wire_row: float,
    r_wire_col: float,
    r_sense: float,
) -> str:
    """SPICE netlist of one M×N crossbar (G in S) that runs ``.op`` for each row of ``volts`` (K×M, in V)."""
    M, N = G.shape
    volts = np.atleast_2d(volts)
    lines = [f"crossbar {M}x{N}"]
    for i in range(M):
        lines.append(f"VIN{i} s{i} 0 DC {float(volts[0, i])!r}")
        _branch(lines, f"D{i}", f"s{i}", f"r{i}_0", r_driver)
        for j in range(N - 1):
            _branch(lines, f"WR{i}_{j}", f"r{i}_{j}", f"r{i}_{j + 1}", r_wire_row)
        for j in range(N):
            g = float(G[i, j])
            if g > 0.0:
                lines.append(f"RG{i}_{j} r{i}_{j} c{i}_{j} {1.0 / g!r}")
    for j in range(N):
        for i in range(M - 1):
            _branch(lines, f"WC{i}_{j}", f"c{i}_{j}", f"c{i + 1}_{j}", r_wire_col)
        if r_sense == 0.0:
            lines.append(f"VS{j} c{M - 1}_{j} 0 DC 0")
        else:
            lines.append(f"RS{j} c{M - 1}_{j} o{j} {r_sense!r}")
            lines.append(f"VS{j} o{j} 0 DC 0")
    # Linear circuit: Newton converges in one step; tight tolerances only make the convergence check strict.
    lines.append(".options reltol=1e-12 abstol=1e-22 vntol=1e-15")
    lines.append(".control")
    lines.append("set numdgt=17")
    for k in range(volts.shape[0]):
        if k > 0:
            lines.extend(f"alter vin{i} dc = {float(volts[k, i])!r}" for i in range(M))
        lines.append("op")
        lines.append(f"echo RUN {k}")
        lines.extend(f"print i(vs{j})" for j in range(N))
    lines.append(".endc")
    lines.append(".end")
    return "\n".join(lines) + "\n"


_VALUE = re.compile(r"^i\(vs(\d+)\)\s*=\s*([-+0-9.eE]+)\s*$")


def run_crossbar(
    G: np.ndarray,
    volts: np.ndarray,
    *,
    r_driver: float,
    r_wire_row: float,
    r_wire_col: float,
    r_sense: float,
    timeout_s: float = 120.0,
) -> np.ndarray:
    """Sense currents (A), shape (K, N), simulated by ngspice for K input vectors ``volts`` (K×M, V)."""
    exe = ngspice_path()
    if exe is None:
        raise RuntimeError(NGSPICE_MISSING)
    volts = np.atleast_2d(np.asarray(volts, dtype=np.float64))
    G = np.asarray(G, dtype=np.float64)
    netlist = crossbar_netlist(
        G, volts, r_driver=r_driver, r_wire_row=r_wire_row, r_wire_col=r_wire_col, r_sense=r_sense
    )
    with tempfile.TemporaryDirectory(prefix="xbarlab-spice-") as tmp:
        path = Path(tmp) / "crossbar.cir"
        path.write_text(netlist)
        proc = subprocess.run(
            [exe, "-b", str(path)], capture_output=True, text=True, timeout=timeout_s, cwd=tmp, check=False
        )
    return parse_currents(proc.stdout, volts.shape[0], G.shape[1], proc.returncode, proc.stderr)


def parse_currents(stdout: str, runs: int, n: int, returncode: int = 0, stderr: str = "") -> np.ndarray:
    """Parse ``RUN k`` blocks of ``i(vsJ) = value`` lines into a (runs, n) array (A); raise on any error."""
    out = np.full((runs, n), np.nan)
    run = -1
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("RUN "):
            run = int(line.split()[1])
            continue
        m = _VALUE.match(line)
        if m and 0 <= run < runs:
            out[run, int(m.group(1))] = float(m.group(2))
    # ngspice -b exits with 1 after a .control-only deck ("no simulations run"): judge by the output instead.
    has_error = any("error" in line.lower() for line in (stdout + "\n" + stderr).splitlines())
    if has_error or np.isnan(out).any():
        tail = "\n".join((stdout + "\n" + stderr).splitlines()[-30:])
        raise RuntimeError(f"ngspice failed (exit {returncode}) or printed incomplete results:\n{tail}")
    return out


def nodal_reference(
    G: np.ndarray,
    *,
    r_driver: float,
    r_wire_row: float,
    r_wire_col: float,
    r_sense: float,
) -> np.ndarray:
    """G_eff (S) of one crossbar by modified nodal analysis of the whole circuit (an independent reference).

    Every node is an unknown; zero resistances are 0 V voltage sources (exact shorts), the inputs are voltage
    sources, and the sense currents are the currents of 0 V sources at the sense outputs. Right-hand sides: the M
    unit input vectors. Solved densely (numpy) for small circuits and with scipy's sparse LU otherwise.
    """
    M, N = G.shape
    nodes: dict[tuple[str, int, int], int] = {}

    def node(kind: str, i: int, j: int = 0) -> int:
        return nodes.setdefault((kind, i, j), len(nodes))

    resistors: list[tuple[int, int | None, float]] = []  # (a, b or ground, conductance S)
    sources: list[tuple[int, int | None]] = []  # (plus, minus or ground): V(plus) − V(minus) = value

    def branch(a: int, b: int | None, r_ohm: float) -> None:
        if r_ohm == 0.0:
            sources.append((a, b))
        else:
            resistors.append((a, b, 1.0 / r_ohm))

    inputs = []
    for i in range(M):
        inputs.append(len(sources))
        sources.append((node("s", i), None))
        branch(node("s", i), node("r", i, 0), r_driver)
        for j in range(N - 1):
            branch(node("r", i, j), node("r", i, j + 1), r_wire_row)
        for j in range(N):
            resistors.append((node("r", i, j), node("c", i, j), float(G[i, j])))
    outputs = []
    for j in range(N):
        for i in range(M - 1):
            branch(node("c", i, j), node("c", i + 1, j), r_wire_col)
        last = node("c", M - 1, j)
        if r_sense == 0.0:
            outputs.append(len(sources))
            sources.append((last, None))
        else:
            resistors.append((last, node("o", j), 1.0 / r_sense))
            outputs.append(len(sources))
            sources.append((node("o", j), None))
    nn, ns = len(nodes), len(sources)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []

    def put(a: int, b: int, v: float) -> None:
        rows.append(a)
        cols.append(b)
        vals.append(v)

    for a, b, g in resistors:
        put(a, a, g)
        if b is not None:
            put(b, b, g)
            put(a, b, -g)
            put(b, a, -g)
    for k, (a, b) in enumerate(sources):
        put(a, nn + k, 1.0)
        put(nn + k, a, 1.0)
        if b is not None:
            put(b, nn + k, -1.0)
            put(nn + k, b, -1.0)
    size = nn + ns
    rhs = np.zeros((size, M))
    for i, k in enumerate(inputs):
        rhs[nn + k, i] = 1.0
    if size <= 2500:
        A = np.zeros((size, size))
        np.add.at(A, (np.asarray(rows), np.asarray(cols)), np.asarray(vals))
        X = np.linalg.solve(A, rhs)
    else:
        import scipy.sparse
        import scipy.sparse.linalg

        A_sp = scipy.sparse.csc_matrix((vals, (rows, cols)), shape=(size, size))
        X = np.asarray(scipy.sparse.linalg.splu(A_sp).solve(rhs))
    # The MNA current of a source flows from its plus node into the source: for an output source (plus = sense
    # node) that is the current through r_sense towards ground.
    return np.stack([X[nn + k] for k in outputs], axis=1)


def relative_error(actual: np.ndarray, expected: np.ndarray, axis: int | Sequence[int] | None = None) -> float:
    """max |actual − expected| / max |expected| (over ``axis`` groups, then the max over groups)."""
    diff = np.abs(np.asarray(actual) - np.asarray(expected))
    scale = np.abs(np.asarray(expected))
    if axis is None:
        return float(diff.max() / scale.max())
    return float(np.max(diff.max(axis=axis) / scale.max(axis=axis)))
