"""
The local tree of LBR for a batch of rows, and the union tree a trajectory leaves behind.

The local tree (docs/DESIGN.md §2.1) hangs from the last committed token; its shape is a widths
tuple w = (w1, ..., wD), non-increasing so that the subtree kept after a commit fits the shape again.
1. `TreeShape`: the static layout. Every node of a full tree gets a fixed *slot* (root 0, then
   level order), so parents, depths, ancestor masks and the commit/shift map are small tables.
2. `LocalTree`: the live state per slot (token, alive, hidden state, record index) and a step's
   operations: `missing` children, `sample_children`, `add` once forwarded, `commit` and shift.
3. The union tree of a record (every node ever born hangs off the committed trunk): `ancestor_mask`,
   `children_table` and `subtree_members` rebuild from parent pointers what the decoder saw.
The sibling samplers, `iid` and `distinct` (without replacement), and the probability q(n) of a
new node: `birth_logq` (§2.2), used by both the decoder and the replay.

Run `python tree.py 4,2` to print the slot layout and shift map of a shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

SAMPLERS = ("iid", "distinct")
MAX_TREE_NODES = 1024  # nodes of a full local tree (root included) accepted: (4, 2) has 13, (8, 8, 8) 585;
# each is forwarded once per step, and TreeShape keeps (nodes x nodes) tables


def parse_widths(widths: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """'4,2' or (4, 2) -> (4, 2), checked: at least one level, every width >= 1, non-increasing, and
    a full tree of at most MAX_TREE_NODES nodes."""
    if isinstance(widths, str):
        try:
            widths = tuple(int(w) for w in widths.split(","))
        except ValueError:
            raise ValueError(f"widths {widths!r}: give comma-separated integers such as '4,2' or '3,1,1'") from None
    widths = tuple(int(w) for w in widths)
    if len(widths) == 0 or any(w < 1 for w in widths):
        raise ValueError(f"widths {widths}: need at least one level and every width >= 1, e.g. (4, 2)")
    if any(a < b for a, b in zip(widths, widths[1:])):
        raise ValueError(f"widths {widths} must be non-increasing (e.g. (4, 2) or (3, 1, 1)): after a commit "
                         "the chosen subtree becomes the tree, so deeper levels cannot be wider")
    if sum(math.prod(widths[:d]) for d in range(len(widths) + 1)) > MAX_TREE_NODES:  # 1 + w1 + w1 w2 + ...
        raise ValueError(f"widths {widths}: a full tree has over {MAX_TREE_NODES} nodes, each forwarded at every "
                         "step; use smaller widths such as 4,2 or 8,1,1")
    return widths


@dataclass(frozen=True)
class TreeShape:
    """The slot layout of a full tree of shape `widths` (N slots; slot 0 is the root)."""
    widths: tuple[int, ...]
    parent: Tensor  # (N,) parent slot; -1 for the root
    depth: Tensor  # (N,) depth of the slot (root 0)
    sib: Tensor  # (N,) index among its siblings = birth order among them
    children: Tensor  # (N, W) child slots in sibling order, -1 where none (W = w1 = the widest level)
    anc: Tensor  # (N, N) bool: anc[j, k] = slot k is j or an ancestor of j
    shift: Tensor  # (w1, N): after committing candidate i, new slot j holds old slot shift[i, j]; -1 = empty
    subtree: Tensor  # (w1, Ms) slots of candidate i's subtree in level order (the candidate first)
    subtree_depth: Tensor  # (Ms,) depth of those slots below the candidate (0 for the candidate)

    @staticmethod
    def from_widths(widths: str | tuple[int, ...]) -> "TreeShape":
        widths = parse_widths(widths)
        D = len(widths)
        # a slot is a path (c1, ..., cd) of child indices from the root, c_k < w_k; level order
        paths: list[tuple[int, ...]] = [()]
        for d in range(D):
            paths += [p + (c,) for p in paths if len(p) == d for c in range(widths[d])]
        slot = {p: j for j, p in enumerate(paths)}
        N, W = len(paths), widths[0]
        parent = torch.tensor([slot[p[:-1]] if p else -1 for p in paths])
        children = torch.full((N, W), -1)
        anc = torch.zeros(N, N, dtype=torch.bool)
        for j, p in enumerate(paths):
            if p:
                children[slot[p[:-1]], p[-1]] = j
                anc[j] = anc[slot[p[:-1]]]  # a node's mask row is its parent's row ...
            anc[j, j] = True  # ... plus itself
        # committing candidate i turns the old path (i, c1, ..., cd) into the new path (c1, ..., cd)
        shift = torch.tensor([[slot.get((i,) + p, -1) for p in paths] for i in range(W)])
        subtree = torch.tensor([[j for j, p in enumerate(paths) if p[:1] == (i,)] for i in range(W)])
        return TreeShape(
            widths=widths, parent=parent, depth=torch.tensor([len(p) for p in paths]),
            sib=torch.tensor([p[-1] if p else 0 for p in paths]), children=children, anc=anc,
            shift=shift, subtree=subtree, subtree_depth=torch.tensor([len(p) - 1 for p in paths if p[:1] == (0,)]))

    def to(self, device: torch.device | str) -> "TreeShape":
        return replace(self, **{f.name: getattr(self, f.name).to(device)
                                for f in fields(self) if isinstance(getattr(self, f.name), Tensor)})

    @property
    def n_slots(self) -> int:
        return len(self.parent)

    def layout(self) -> str:
        """Human-readable table of slots (used by `python tree.py`)."""
        rows = [f"widths {self.widths}: {self.n_slots} slots, subtree size {self.subtree.shape[1]}",
                "slot depth parent sib  shift[i] for i = 0..w1-1"]
        for j in range(self.n_slots):
            rows.append(f"{j:4d} {int(self.depth[j]):5d} {int(self.parent[j]):6d} {int(self.sib[j]):3d}  "
                        + " ".join(f"{int(s):3d}" for s in self.shift[:, j]))
        return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# sampling


def sample_categorical(logp: Tensor, generator: torch.Generator) -> Tensor:
    """One draw per row of log-probabilities (..., V) -> (...,), by the Gumbel-max trick.

    argmax(log p + G) with G iid Gumbel(0, 1) is an exact draw from p; it needs no normalised
    probabilities, so tokens masked to -inf are never drawn and underflow cannot bite.
    """
    u = torch.rand(logp.shape, generator=generator, device=logp.device)
    return (logp - torch.log(-torch.log(u))).argmax(-1)


def birth_logq(lp: Tensor, sib_lp: Tensor, sib_before: Tensor, sampler: str) -> Tensor:
    """log q(n) of a new node, from log-probs under its parent's next-token distribution.

    lp (...) log p(t) of the node's token; sib_lp (..., W) log p(s) of its siblings' tokens;
    sib_before (..., W) bool: that sibling was born before the node.
    iid: log p(t). distinct: log p(t) - log(1 - Σ_{s born before} p(s)).
    """
    if sampler == "iid":
        return lp
    taken = (sib_lp.exp() * sib_before).sum(-1)
    return lp - torch.log1p(-taken.clamp(max=1 - 1e-7))


# ---------------------------------------------------------------------------------------------
# the live tree of a batch of rows


@dataclass
class LocalTree:
    """The local trees of B rows, stored by slot (see TreeShape). Slot 0 is the root."""
    shape: TreeShape
    tok: Tensor  # (B, N) token of each slot
    alive: Tensor  # (B, N) bool: the slot holds a node (every node is forwarded in the wave it is born)
    hidden: Tensor  # (B, N, C) post-node hidden state
    node: Tensor  # (B, N) index of the slot's node in the trajectory record

    @staticmethod
    def start(shape: TreeShape, root_tok: Tensor, root_hidden: Tensor, root_node: Tensor) -> "LocalTree":
        """A tree holding only its root (the last prompt token), already forwarded."""
        B, N = root_tok.shape[0], shape.n_slots
        tree = LocalTree(
            shape=shape,
            tok=torch.zeros(B, N, dtype=torch.long, device=root_tok.device),
            alive=torch.zeros(B, N, dtype=torch.bool, device=root_tok.device),
            hidden=root_hidden.new_zeros(B, N, root_hidden.shape[-1]),
            node=torch.zeros(B, N, dtype=torch.long, device=root_tok.device))
        tree.tok[:, 0], tree.alive[:, 0] = root_tok, True
        tree.hidden[:, 0], tree.node[:, 0] = root_hidden, root_node
        return tree

    def missing(self, active: Tensor, stop_ids: Tensor) -> Tensor:
        """(B, N) bool: empty slots whose parent is alive (hence forwarded) and not a stop id (EOS:
        any of the 1-D tensor `stop_ids`), in active rows.

        Called once per wave: the children of a node born in this wave wait for the next one.
        """
        par = self.shape.parent.clamp(min=0)
        can_have_children = self.alive & ~torch.isin(self.tok, stop_ids)  # (B, N)
        return can_have_children[:, par] & (self.shape.parent >= 0) & ~self.alive & active[:, None]

    def sample_children(self, need: Tensor, cols: Tensor, logp: Tensor, sampler: str,
                        generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Draw a token for every needed slot in `cols` (n,); returns tok, logq, each (B, n).

        logp (B, n, V): the next-token log-probs of each slot's parent. Rows where a slot is not
        needed get a token too (ignored by the caller).
        """
        par = self.shape.parent[cols]  # (n,)
        sibs = self.shape.children[par]  # (n, W) slots of all children of the same parent
        sib_ok = sibs >= 0
        sibs = sibs.clamp(min=0)
        before = sib_ok & (self.shape.sib[sibs] < self.shape.sib[cols][:, None])  # (n, W) born earlier
        tok = self.tok.clone()
        if sampler == "iid":
            tok[:, cols] = sample_categorical(logp, generator)
        else:
            # siblings in birth order: each draw excludes the tokens of the siblings before it
            # (kept ones from earlier steps, and those drawn just now)
            present = self.alive | need  # (B, N)
            for c in self.shape.sib[cols].unique().tolist():
                at = (self.shape.sib[cols] == c).nonzero().squeeze(1)
                excl = before[at] & present[:, sibs[at]]  # (B, n_c, W)
                counts = torch.zeros_like(logp[:, at]).scatter_add_(-1, tok[:, sibs[at]], excl.to(logp.dtype))
                tok[:, cols[at]] = sample_categorical(logp[:, at].masked_fill(counts > 0, float("-inf")), generator)
        sib_before = before & (self.alive | need)[:, sibs]  # (B, n, W)
        lp = logp.gather(-1, tok[:, cols, None]).squeeze(-1)
        logq = birth_logq(lp, logp.gather(-1, tok[:, sibs]), sib_before, sampler)
        return tok[:, cols], logq

    def add(self, need: Tensor, cols: Tensor, tok: Tensor, hidden: Tensor, node: Tensor) -> None:
        """Store the nodes just born and forwarded in slots `cols` (where `need`)."""
        n = need[:, cols]  # (B, n)
        self.tok[:, cols] = torch.where(n, tok, self.tok[:, cols])
        self.hidden[:, cols] = torch.where(n[..., None], hidden.to(self.hidden.dtype), self.hidden[:, cols])
        self.node[:, cols] = torch.where(n, node, self.node[:, cols])
        self.alive[:, cols] |= n

    def commit(self, choice: Tensor) -> Tensor:
        """Commit depth-1 candidate `choice` (B,), prune the other candidates' subtrees, shift.

        The chosen candidate becomes the root, its depth-2 nodes become depth 1, and so on:
        one gather by the static shift map. Returns that map per row, (B, N), -1 = empty slot,
        so the caller can move the KV cache's tree region the same way.
        """
        src = self.shape.shift[choice]  # (B, N)
        keep = src >= 0
        idx = src.clamp(min=0)
        self.tok = self.tok.gather(1, idx)
        self.alive = self.alive.gather(1, idx) & keep
        self.node = self.node.gather(1, idx)
        self.hidden = self.hidden.gather(1, idx[..., None].expand(-1, -1, self.hidden.shape[-1]))
        return src


# ---------------------------------------------------------------------------------------------
# the union tree of a recorded trajectory


def ancestor_mask(parent: Tensor) -> tuple[Tensor, Tensor]:
    """From parent pointers (B, M) (-1: no parent) to anc (B, M, M) bool and depth (B, M).

    anc[b, n, m]: node m is n or an ancestor of n, the attention mask of a tree forward;
    depth[b, n]: number of ancestors, the node's position id.
    Every node walks up its path one step per round (as many rounds as the deepest node).
    Pointer doubling needs fewer rounds but copies B*M*M bools in each: slower on CPU here.
    """
    B, M = parent.shape
    anc = torch.eye(M, dtype=torch.bool, device=parent.device).repeat(B, 1, 1)
    depth = torch.zeros_like(parent)
    cur = parent.clone()
    while True:
        b, n = (cur >= 0).nonzero(as_tuple=True)
        if len(b) == 0:
            return anc, depth
        anc[b, n, cur[b, n]] = True
        depth[b, n] += 1
        cur[b, n] = parent[b, cur[b, n]]


def children_table(parent: Tensor, width: int) -> Tensor:
    """(B, M, width): the children of every node in birth order (= index order), -1 where none.

    Sort the nodes by (parent, index); a node's rank among its siblings is its distance from
    the first node of its parent's group.
    """
    B, M = parent.shape
    idx = torch.arange(M, device=parent.device).expand(B, M)
    has_parent = parent >= 0
    order = (torch.where(has_parent, parent, M) * M + idx).argsort(dim=1)
    par_sorted = parent.gather(1, order)
    first = torch.ones_like(has_parent)
    first[:, 1:] = par_sorted[:, 1:] != par_sorted[:, :-1]
    start = torch.where(first, idx, 0).cummax(dim=1).values
    rank = torch.empty_like(order).scatter_(1, order, idx - start)
    assert bool((rank[has_parent] < width).all()), "a node has more children than the widest level"
    table = torch.full((B, M + 1, width), -1, dtype=torch.long, device=parent.device)
    b = torch.arange(B, device=parent.device)[:, None].expand(B, M)
    table[b, torch.where(has_parent, parent, M), torch.where(has_parent, rank, 0)] = torch.where(has_parent, idx, -1)
    return table[:, :M]


def subtree_members(children: Tensor, birth_step: Tensor, cand: Tensor, step: Tensor,
                    widths: tuple[int, ...]) -> Tensor:
    """Nodes of each candidate's depth-1 subtree in tree_t, level order: (B, S, K, Ms), -1 = none.

    children (B, M, W) from `children_table`; birth_step (B, M); cand (B, S, K) the candidates
    (-1 = none) and step (B, S) the step t they were candidates at. tree_t holds the descendants
    of step t's root born at a step <= t. A node at depth d of tree_t then has at most w_{d+1}
    children, and children are listed in birth order, so those in tree_t are the first
    w_{d+1}; later-born ones (the chosen candidate grows on after step t) fail the birth-step
    test. The result has the decoder's slot layout (TreeShape.subtree).
    """
    B, S, K = cand.shape
    W = children.shape[-1]
    level, levels = cand[..., None], [cand[..., None]]  # (B, S, K, n_level)
    for w in widths[1:]:
        flat = level.reshape(B, -1, 1)
        kids = children.gather(1, flat.clamp(min=0).expand(-1, -1, W))[..., :w]  # (B, S*K*n_level, w)
        level = torch.where(flat >= 0, kids, -1).reshape(B, S, K, -1)
        levels.append(level)
    members = torch.cat(levels, dim=-1)  # (B, S, K, Ms)
    born = birth_step.gather(1, members.clamp(min=0).reshape(B, -1)).reshape(members.shape)
    return torch.where((members >= 0) & (born <= step[..., None, None]), members, -1)


def main() -> None:
    from tools.cli import ArgumentParser  # the command line's helper; the tree itself needs none
    ap = ArgumentParser(description="Print the slot layout and the shift map of a local tree shape "
                        "(slot, depth, parent, sibling index; shift[i, j] = the old slot that new slot j "
                        "holds after committing candidate i, -1 = empty).")
    ap.add_argument("widths", nargs="?", default="4,2", help="non-increasing widths per level, e.g. 4,2 or 3,1,1 "
                    "(default 4,2)")
    print(TreeShape.from_widths(ap.parse_args().widths).layout())


if __name__ == "__main__":
    from tools.cli import run
    run(main)
