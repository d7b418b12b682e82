"""Max-flow / min-cut by Boykov and Kolmogorov's algorithm (chapter 10).

Boykov & Kolmogorov, "An experimental comparison of min-cut/max-flow
algorithms for energy minimization in vision", IEEE TPAMI 2004. The graph
has a source ``s``, a sink ``t`` and ``n`` nodes; every node may have an arc
from ``s`` and an arc to ``t``, and node pairs are joined by arcs in both
directions. The maximum flow from ``s`` to ``t`` equals the capacity of the
minimum cut (Ford & Fulkerson), and the cut is read off at the end: the nodes
still reachable from ``s`` in the residual graph form the source side.

The algorithm grows two search trees, one from ``s`` and one from ``t``,
through arcs with residual capacity:

1. **growth**: an active node adds its free neighbours to its tree, until an
   arc joins the two trees, which closes a path ``s -> ... -> t``;
2. **augmentation**: push the path's bottleneck capacity along it; the arcs it
   saturates cut their child nodes off the tree (they become *orphans*);
3. **adoption**: each orphan looks for a new parent in its own tree whose
   chain leads to the terminal (preferring the shortest chain); one without
   becomes free, and its own children become orphans.

It stops when no active node is left: then no path from ``s`` to ``t`` exists.
Unlike augmenting along shortest paths from scratch (Edmonds-Karp, Dinic),
the trees are reused between augmentations, which on image grids makes it
the fastest of the classic algorithms in practice. This is a transcription
of the authors' reference implementation (maxflow v3: time stamps and
distances for the adoption, the current node kept active) into Python lists.

Deviations from the paper: none in the algorithm; capacities are Python
floats, so give finite capacities (a large constant for "infinite").
"""

from __future__ import annotations

from collections import deque

import torch

TERMINAL, ORPHAN, FREE = -1, -2, -3  # parent values that are not arcs
_INFINITE_DISTANCE = 1 << 60


def _as_list(values, length: int, name: str) -> list[float]:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() != length:
        raise ValueError(f"{name} must have {length} values, got {t.numel()}")
    if not torch.isfinite(t).all() or (t < 0).any():
        raise ValueError(f"{name} must be finite and >= 0")
    return t.tolist()


def maxflow(source_caps, sink_caps, edges, forward_caps, backward_caps
            ) -> tuple[float, torch.Tensor]:
    """The maximum flow and a minimum cut of a graph of ``n`` nodes.

    - ``source_caps``, ``sink_caps``: ``[n]`` capacities of ``s -> i`` and
      ``i -> t``;
    - ``edges``: ``int64 [m, 2]`` node pairs ``(i, j)``, ``i != j``;
    - ``forward_caps``, ``backward_caps``: ``[m]`` capacities of ``i -> j``
      and of ``j -> i``.

    All capacities finite and >= 0. Returns ``(flow, source_side)``: the flow's
    value (= the cut's capacity) and bool ``[n]``, True for the nodes on the
    source side of a minimum cut (those reachable from ``s`` in the residual
    graph).
    """
    tr = _as_list(source_caps, len(torch.as_tensor(source_caps).flatten()),
                  "source_caps")
    n = len(tr)
    sink = _as_list(sink_caps, n, "sink_caps")
    edges = torch.as_tensor(edges, dtype=torch.int64).reshape(-1, 2)
    m = len(edges)
    fwd = _as_list(forward_caps, m, "forward_caps")
    bwd = _as_list(backward_caps, m, "backward_caps")
    if m and (edges.min() < 0 or edges.max() >= n or
              (edges[:, 0] == edges[:, 1]).any()):
        raise ValueError(f"edges must join two different nodes in 0..{n - 1}")

    # Arc 2k goes i -> j, arc 2k + 1 goes j -> i: an arc's sister is a ^ 1.
    head, rcap = [0] * (2 * m), [0.0] * (2 * m)
    arcs = [[] for _ in range(n)]  # the arcs leaving each node
    for k, (i, j) in enumerate(edges.tolist()):
        head[2 * k], head[2 * k + 1] = j, i
        rcap[2 * k], rcap[2 * k + 1] = fwd[k], bwd[k]
        arcs[i].append(2 * k)
        arcs[j].append(2 * k + 1)

    # A node's terminal arcs: keep only the difference (tr > 0: residual from
    # s, tr < 0: residual to t); the common part is flow s -> i -> t already.
    flow = 0.0
    for i in range(n):
        flow += min(tr[i], sink[i])
        tr[i] -= sink[i]

    parent = [FREE] * n  # the arc from a node to its parent in its tree
    is_sink = [False] * n  # which tree a node is in (when not FREE)
    stamp, dist = [0] * n, [0] * n  # when a node's distance was last known
    active_flag = [False] * n
    active = deque()

    def set_active(i):
        if not active_flag[i]:
            active_flag[i] = True
            active.append(i)

    for i in range(n):
        if tr[i] != 0:
            parent[i], is_sink[i], dist[i] = TERMINAL, tr[i] < 0, 1
            set_active(i)

    time = 0
    orphans = deque()

    def augment(middle):  # middle: an arc from the source tree to the sink tree
        nonlocal flow
        bottleneck = rcap[middle]
        i = head[middle ^ 1]
        while parent[i] != TERMINAL:  # 1a: the source tree
            a = parent[i]
            bottleneck = min(bottleneck, rcap[a ^ 1])
            i = head[a]
        bottleneck = min(bottleneck, tr[i])
        i = head[middle]
        while parent[i] != TERMINAL:  # 1b: the sink tree
            a = parent[i]
            bottleneck = min(bottleneck, rcap[a])
            i = head[a]
        bottleneck = min(bottleneck, -tr[i])

        rcap[middle ^ 1] += bottleneck
        rcap[middle] -= bottleneck
        i = head[middle ^ 1]
        while True:  # 2a: push along the source tree; saturated arcs orphan
            a = parent[i]
            if a == TERMINAL:
                break
            rcap[a] += bottleneck
            rcap[a ^ 1] -= bottleneck
            if rcap[a ^ 1] == 0:
                parent[i] = ORPHAN
                orphans.appendleft(i)
            i = head[a]
        tr[i] -= bottleneck
        if tr[i] == 0:
            parent[i] = ORPHAN
            orphans.appendleft(i)
        i = head[middle]
        while True:  # 2b: the sink tree
            a = parent[i]
            if a == TERMINAL:
                break
            rcap[a ^ 1] += bottleneck
            rcap[a] -= bottleneck
            if rcap[a] == 0:
                parent[i] = ORPHAN
                orphans.appendleft(i)
            i = head[a]
        tr[i] += bottleneck
        if tr[i] == 0:
            parent[i] = ORPHAN
            orphans.appendleft(i)
        flow += bottleneck

    def adopt(i):
        """Find orphan ``i`` a parent in its tree, or free it."""
        sink_side = is_sink[i]
        best_arc, best_d = FREE, _INFINITE_DISTANCE
        for a0 in arcs[i]:
            # The arc from the candidate j to i (source tree) or from i to j
            # (sink tree) must have residual capacity.
            if (rcap[a0] if sink_side else rcap[a0 ^ 1]) == 0:
                continue
            j = head[a0]
            if parent[j] == FREE or is_sink[j] != sink_side:
                continue
            d, k = 0, j  # does j's chain reach the terminal?
            while True:
                if stamp[k] == time:
                    d += dist[k]
                    break
                a = parent[k]
                d += 1
                if a == TERMINAL:
                    stamp[k], dist[k] = time, 1
                    break
                if a == ORPHAN:
                    d = _INFINITE_DISTANCE
                    break
                k = head[a]
            if d < _INFINITE_DISTANCE:
                if d < best_d:
                    best_arc, best_d = a0, d
                k = j  # remember the distances along the chain just walked
                while stamp[k] != time:
                    stamp[k], dist[k] = time, d
                    d -= 1
                    k = head[parent[k]]
        if best_arc != FREE:
            parent[i], stamp[i], dist[i] = best_arc, time, best_d + 1
            return
        parent[i] = FREE
        for a0 in arcs[i]:
            j = head[a0]
            if parent[j] == FREE or is_sink[j] != sink_side:
                continue
            if (rcap[a0] if sink_side else rcap[a0 ^ 1]) > 0:
                set_active(j)  # j may grow into i again later
            a = parent[j]
            if a >= 0 and head[a] == i:
                parent[j] = ORPHAN
                orphans.append(j)

    current = None
    while True:
        i = current
        if i is not None:
            active_flag[i] = False
            if parent[i] == FREE:
                i = None
        while i is None and active:
            j = active.popleft()
            active_flag[j] = False
            if parent[j] != FREE:
                i = j
        if i is None:
            break

        middle = None  # growth
        if not is_sink[i]:
            for a in arcs[i]:
                if rcap[a] == 0:
                    continue
                j = head[a]
                if parent[j] == FREE:
                    parent[j], is_sink[j] = a ^ 1, False
                    stamp[j], dist[j] = stamp[i], dist[i] + 1
                    set_active(j)
                elif is_sink[j]:
                    middle = a
                    break
                elif stamp[j] <= stamp[i] and dist[j] > dist[i]:
                    parent[j], stamp[j], dist[j] = a ^ 1, stamp[i], dist[i] + 1
        else:
            for a in arcs[i]:
                if rcap[a ^ 1] == 0:
                    continue
                j = head[a]
                if parent[j] == FREE:
                    parent[j], is_sink[j] = a ^ 1, True
                    stamp[j], dist[j] = stamp[i], dist[i] + 1
                    set_active(j)
                elif not is_sink[j]:
                    middle = a ^ 1
                    break
                elif stamp[j] <= stamp[i] and dist[j] > dist[i]:
                    parent[j], stamp[j], dist[j] = a ^ 1, stamp[i], dist[i] + 1

        time += 1
        if middle is None:
            current = None
            continue
        active_flag[i] = True  # keep growing from i after the augmentation
        current = i
        augment(middle)
        while orphans:
            adopt(orphans.popleft())

    source_side = [parent[i] != FREE and not is_sink[i] for i in range(n)]
    return flow, torch.tensor(source_side, dtype=torch.bool)
