"""River's Half-Space Trees with the learned masses in a byte string, one per location.

``river.anomaly.HalfSpaceTrees`` keeps each tree as linked node objects: a location's model
pickles to tens of kilobytes, too much to read and write on every event of a Faust table. Here the
*structure* of the trees — which feature each node splits on, and where — is drawn once by River
itself (``river.tree.padded.make_padded_tree``, the same seeded random draws
``HalfSpaceTrees.learn_one`` makes) and shared by every location; only the per-node masses, which
are what a location learns, live in that location's state, as 16-bit counters (``array('H')``).
Learning and scoring are River's ``_walk_learn`` / ``_walk_score`` over those arrays, so the scores
are River's, to the last digit:

>>> from river import anomaly
>>> X = [0.5, 0.45, 0.43, 0.44, 0.445, 0.45, 0.0]
>>> river_hst = anomaly.HalfSpaceTrees(n_trees=5, height=3, window_size=3, seed=42)
>>> hst = CompactHST(["x"], n_trees=5, height=3, window_size=3, seed=42)
>>> state = hst.new_state()
>>> for x in X[:3]:
...     river_hst.learn_one({"x": x}); hst.learn_one(state, [x])
>>> for x in X:
...     river_hst.learn_one({"x": x}); hst.learn_one(state, [x])
...     print(f"{hst.score_one(state, [x]):.3f}", river_hst.score_one({"x": x}) == hst.score_one(state, [x]))
0.107 True
0.071 True
0.107 True
0.107 True
0.107 True
0.071 True
0.853 True
>>> len(hst.encode(state))   # 5 trees of 15 nodes, two 16-bit masses each, plus a counter
304
"""

from __future__ import annotations

import random
from array import array

from river.tree.padded import make_padded_tree


class HSTState:
    """The learned part of one Half-Space Trees model: masses and the window counter."""

    __slots__ = ("counter", "first_window", "l_mass", "r_mass")

    def __init__(self, l_mass: array, r_mass: array, counter: int = 0,
                 first_window: bool = True) -> None:
        self.l_mass = l_mass
        self.r_mass = r_mass
        self.counter = counter
        self.first_window = first_window


class CompactHST:
    """Half-Space Trees over features in [0, 1] with a shared structure and per-key masses.

    Features are a list in the order of ``features`` (all present). ``learn_one`` and
    ``score_one`` take an :class:`HSTState`; ``encode``/``decode`` turn it into bytes.
    """

    def __init__(self, features: list[str], n_trees: int = 10, height: int = 8,
                 window_size: int = 250, seed: int | None = None) -> None:
        self.features = list(features)
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        rng = random.Random(seed)
        limits = {f: (0.0, 1.0) for f in sorted(self.features)}
        index = {f: i for i, f in enumerate(self.features)}
        self.nodes = 2 ** (height + 1) - 1
        self.feature: list[int] = []
        self.threshold: list[float] = []
        for _ in range(n_trees):
            root = make_padded_tree(limits=dict(limits), height=height, padding=0.15, rng=rng,
                                    r_mass=0, l_mass=0)
            level = [root]                       # breadth-first = heap order (children 2i+1, 2i+2)
            for _ in range(height + 1):
                nxt = []
                for node in level:
                    if hasattr(node, "feature"):
                        self.feature.append(index[node.feature])
                        self.threshold.append(node.threshold)
                        nxt.extend(node.children)
                    else:
                        self.feature.append(-1)
                        self.threshold.append(0.0)
                level = nxt
        self.size_limit = 0.1 * window_size
        self.max_score = n_trees * window_size * (2 ** (height + 1) - 1)

    def new_state(self) -> HSTState:
        n = self.n_trees * self.nodes
        return HSTState(array("H", bytes(2 * n)), array("H", bytes(2 * n)))

    def encode(self, st: HSTState) -> bytes:
        head = array("H", [st.counter, 1 if st.first_window else 0])
        return head.tobytes() + st.l_mass.tobytes() + st.r_mass.tobytes()

    def decode(self, raw: bytes) -> HSTState:
        n = self.n_trees * self.nodes
        if len(raw) != 4 + 4 * n:
            return self.new_state()              # a model of another shape: start afresh
        head = array("H", raw[:4])
        l_mass = array("H", raw[4:4 + 2 * n])
        r_mass = array("H", raw[4 + 2 * n:])
        return HSTState(l_mass, r_mass, head[0], bool(head[1]))

    def learn_one(self, st: HSTState, x: list[float]) -> None:
        feature, threshold, l_mass = self.feature, self.threshold, st.l_mass
        nodes, height = self.nodes, self.height
        for t in range(self.n_trees):
            base = t * nodes
            i = 0
            for _ in range(height):
                k = base + i
                l_mass[k] += 1
                i = 2 * i + 1 if x[feature[k]] < threshold[k] else 2 * i + 2
            l_mass[base + i] += 1
        st.counter += 1
        if st.counter == self.window_size:
            st.r_mass = l_mass
            st.l_mass = array("H", bytes(2 * len(l_mass)))
            st.first_window = False
            st.counter = 0

    def score_one(self, st: HSTState, x: list[float]) -> float:
        """Anomaly score in [0, 1]; higher is more anomalous (0 during the first window)."""
        if st.first_window:
            return 0.0
        feature, threshold, r_mass = self.feature, self.threshold, st.r_mass
        nodes, height, size_limit = self.nodes, self.height, self.size_limit
        score = 0.0
        for t in range(self.n_trees):
            base = t * nodes
            i = 0
            depth_pow = 1
            for _ in range(height):
                k = base + i
                r = r_mass[k]
                score += r * depth_pow
                if r < size_limit:
                    break
                i = 2 * i + 1 if x[feature[k]] < threshold[k] else 2 * i + 2
                depth_pow <<= 1
            else:
                score += r_mass[base + i] * depth_pow
        return 1 - score / self.max_score

    def score_learn_one(self, st: HSTState, x: list[float]) -> float:
        """``score_one`` then ``learn_one`` in a single walk down each tree (same results: the
        score reads the reference masses, learning adds to the latest ones)."""
        feature, threshold, r_mass, l_mass = self.feature, self.threshold, st.r_mass, st.l_mass
        nodes, height, size_limit = self.nodes, self.height, self.size_limit
        scoring = not st.first_window
        score = 0.0
        for t in range(self.n_trees):
            base = t * nodes
            i = 0
            depth_pow = 1
            live = scoring
            for _ in range(height):
                k = base + i
                l_mass[k] += 1
                if live:
                    r = r_mass[k]
                    score += r * depth_pow
                    if r < size_limit:
                        live = False
                    depth_pow <<= 1
                i = 2 * i + 1 if x[feature[k]] < threshold[k] else 2 * i + 2
            l_mass[base + i] += 1
            if live:
                score += r_mass[base + i] * depth_pow
        st.counter += 1
        if st.counter == self.window_size:
            st.r_mass = l_mass
            st.l_mass = array("H", bytes(2 * len(l_mass)))
            st.first_window = False
            st.counter = 0
        return 1 - score / self.max_score if scoring else 0.0

    def unlearn_one(self, st: HSTState, x: list[float]) -> None:
        """Take back the last ``learn_one(x)`` (a flagged observation must not count as normal).
        If that learning closed a window, it is taken out of the new reference masses."""
        pivoted = st.counter == 0 and not st.first_window
        masses = st.r_mass if pivoted else st.l_mass
        feature, threshold, nodes = self.feature, self.threshold, self.nodes
        for t in range(self.n_trees):
            base = t * nodes
            i = 0
            for _ in range(self.height):
                k = base + i
                if masses[k]:
                    masses[k] -= 1
                i = 2 * i + 1 if x[feature[k]] < threshold[k] else 2 * i + 2
            if masses[base + i]:
                masses[base + i] -= 1
        if not pivoted:
            st.counter -= 1
