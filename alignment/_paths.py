r"""The teacher's likeliest path inside each student token: the chain rule's terms the sampled token leaves out.

:func:`~alignment.byte_logprobs` compares the two models at every byte of the token the student sampled at each
frame. By the chain rule, the token-level KL at that frame is a sum over every prefix :math:`u` of the student's
tokens, each weighted by the teacher's probability of :math:`u`, of the KL between the two next-byte distributions
after :math:`u`. The sampled token's prefixes are one path through that sum (:func:`~alignment.prefix_weights`
weighs them). :func:`teacher_path_logprobs` adds the path the teacher itself likes best from each token boundary,
so that the bytes after a first byte the student did not pick are taught too, by the teacher's belief in them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from alignment._byteframes import ByteFrames, check_frame_logits
from alignment.errors import AlignmentError
from alignment.nextbyte import STOP, ByteVocab, _next_byte_mass, _normalised_log, fold_next_bytes
from alignment.teacher import TeacherBatch, as_mask_dtype, check_mask_dtype

__all__ = ["TeacherPath", "teacher_path_logprobs"]

TeacherForward = Callable[[dict[str, torch.Tensor]], torch.Tensor]
# a node found on a path: (entry of the frames it starts from, teacher row, teacher slot read, the teacher token's
# bytes read there, the node's bytes after the entry, the teacher's log-probability of those bytes)
_Node = tuple[int, int, int, bytes, bytes, float]
# a path's state: (entry, teacher row, slot read, the node's bytes so far, their log-probability), and one step of
# it: that state, the teacher's likeliest token's bytes there and its unit
_Path = tuple[int, int, int, bytes, float]
_Step = tuple[_Path, bytes, int]
_ARGMAX_ROWS = 256  # rows of (·, W) logits gathered at once to find the teacher's likeliest token


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class TeacherPath:
    """The nodes of the teacher's likeliest paths that the student's sampled tokens did not read, both models read
    there (:func:`teacher_path_logprobs`).

    Attributes:
        student: ``(N, 258)`` the student's next-byte log-probabilities after each node (with
            :data:`~alignment.nextbyte.STOP`), differentiable.
        teacher: ``(N, 258)`` the teacher's, folded into the student's classes; no gradient.
        weights: ``(N,)`` the teacher's probability of each node's bytes after its entry; no gradient.
        entries: ``(N,)`` int64 the entry of the frames each node's path starts from (``frames.rows[entries]`` are
            the examples).
        nodes: ``N`` byte strings, each node's bytes after its entry: a proper prefix of some student token that
            the token sampled there does not begin with.
    """

    student: torch.Tensor
    teacher: torch.Tensor
    weights: torch.Tensor
    entries: np.ndarray
    nodes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        count = len(self.nodes)
        shapes = (tuple(self.student.shape), tuple(self.teacher.shape), tuple(self.weights.shape), self.entries.shape)
        if shapes != ((count, STOP + 1), (count, STOP + 1), (count,), (count,)):
            raise ValueError(f"a TeacherPath of {count} nodes needs (N, 258), (N, 258), (N,) and (N,), got {shapes}")
        self.entries.setflags(write=False)

    def __len__(self) -> int:
        return len(self.nodes)


def teacher_path_logprobs(
    frames: ByteFrames,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    student_vocab: ByteVocab,
    teacher_vocab: ByteVocab,
    batch: TeacherBatch | None = None,
    teacher_forward: TeacherForward | None = None,
    temperature: float = 1.0,
    depth: int = 8,
    mask_dtype: torch.dtype = torch.float32,
) -> TeacherPath:
    r"""Both models' next bytes at the nodes of the teacher's likeliest path that the student's tokens did not read.

    From every entry of ``frames`` where both sides begin a token, the path follows the teacher's likeliest choice
    while the student has a longer token that begins with the bytes so far (``depth`` steps at most). Each node
    :math:`u` of it that the token the student sampled at that frame does not begin with is one more entry: the
    student's frame read after :math:`u` (with :data:`~alignment.nextbyte.STOP`), the teacher's next byte after
    :math:`u` folded into the student's classes, and the weight :math:`P_{\text{teacher}}(u)`, the product of the
    teacher's next-byte probabilities along the path. With the entries of :func:`~alignment.byte_logprobs` weighed
    by :func:`~alignment.prefix_weights`, the sum follows the chain rule of the token-level KL over the sampled
    token's prefixes and the teacher's likeliest ones (with ``beta=0``; exactly where those cover every prefix and
    the teacher is read in the student's classes, as with one vocabulary):

    .. math::
        \mathcal{L} = \frac{1}{P}\Big(\sum_{\text{sampled}} w_i\,D(s_i, t_i)
            + \sum_{\text{path}} P_{\text{teacher}}(u_j)\,D(s_j, t_j)\Big)

    How the path is read depends on the vocabularies:

    * the same bytes on both sides: the teacher's row at the boundary holds every node of the student's tokens, so
      the path takes the teacher's likeliest next byte there, and no forward pass is needed;
    * otherwise: at each step the teacher's likeliest token. The nodes inside it are read in the same row; the
      node after it is read at a new position holding that token, placed after the batch's tokens with a tree
      mask (it sees the text up to the path's root and the path's tokens before it). Each step that goes on costs
      one call of ``teacher_forward`` over ``(B, S + E)`` positions, ``E`` the most path tokens of a row so far.

    The teacher's choices are read on the host, so each step waits for the device a few times. Nothing here takes
    a gradient on the teacher's side; the student's side is differentiable.

    Args:
        frames: the entries compared by :func:`~alignment.byte_logprobs` (``TeacherBatch.byte_frames``, or a
            :meth:`~alignment.ByteFrames.select` of them).
        student_logits: ``(B, T, V')`` the student's completion-frame logits.
        teacher_logits: ``(B, S, W')`` the teacher's logits over ``batch.input_ids``.
        student_vocab: the student's :class:`~alignment.ByteVocab` (restricted if its output layer is trimmed).
        teacher_vocab: the teacher's; where its output layer is trimmed, restricted so that its
            :attr:`~alignment.ByteVocab.token_ids` give the ids the teacher reads.
        batch: the :class:`~alignment.TeacherBatch` the frames come from; needed across vocabularies.
        teacher_forward: needed across vocabularies: the teacher's ``(B, S + E, W')`` logits for the inputs of
            :meth:`TeacherBatch.branched_inputs <alignment.TeacherBatch>`'s form (``input_ids``, a ``(B, 1, S + E,
            S + E)`` ``attention_mask`` of ``mask_dtype``, ``position_ids``), e.g. ``lambda inputs:
            teacher(**inputs).logits`` for a Hugging Face model with eager or SDPA attention. Called without
            gradients.
        temperature: :math:`\tau > 0` dividing both sides' logits, as in :func:`~alignment.byte_logprobs`.
        depth: the most steps a path takes (bytes with the same vocabulary, teacher tokens otherwise).
        mask_dtype: of the tree mask: floating (additive) or ``torch.bool``, as in ``branched_inputs``.

    Returns:
        A :class:`TeacherPath` of ``N`` nodes (``N`` may be 0). Add
        ``(generalized_jsd(path.student, path.teacher, beta=..., reduction="none") * path.weights).sum()`` to the
        weighted sum over ``frames`` before dividing by ``len(frames)``.

    Raises:
        ValueError: the vocabularies differ and ``batch`` or ``teacher_forward`` is missing, ``depth < 1``, or
            ``mask_dtype`` is neither floating nor ``torch.bool``.
        AlignmentError: the logits do not hold every entry, or ``teacher_forward`` returns logits of another shape.
        TypeError: the logits are not floating point.

    Examples:
        >>> import numpy as np
        >>> vocab = ByteVocab(token_bytes=(b"4", b"45", b"456", b"7", b"78"), ends=frozenset())
        >>> frames = ByteFrames(rows=np.zeros(2, dtype=np.int64), student_frames=np.zeros(2, dtype=np.int64),
        ...     student_prefixes=(b"", b"7"), teacher_positions=np.zeros(2, dtype=np.int64),
        ...     teacher_prefixes=(b"", b"7"), targets=np.array([ord("7"), ord("8")]), token_ends=np.zeros(2, bool))
        >>> teacher = torch.tensor([[[0.0, 0.0, 3.0, 0.0, 0.0]]])  # likes 456; the student sampled 78
        >>> path = teacher_path_logprobs(frames, torch.zeros(1, 1, 5), teacher, student_vocab=vocab,
        ...     teacher_vocab=vocab)
        >>> path.nodes, path.weights  # nothing goes on after 456; P(4) = (2+e³)/(4+e³), P(45) = (1+e³)/(4+e³)
        ((b'4', b'45'), tensor([0.9170, 0.8754]))
    """
    check_frame_logits(frames, student_logits, teacher_logits)
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    check_mask_dtype(mask_dtype)
    same = student_vocab.token_bytes == teacher_vocab.token_bytes
    if not same and (batch is None or teacher_forward is None):
        raise ValueError(
            "across vocabularies the teacher's path is read at new positions: pass batch= (the TeacherBatch) and "
            "teacher_forward= (inputs -> the teacher's logits)"
        )
    walk = _Walk(
        frames=frames,
        starts=_starts(frames),
        sampled=_sampled(frames),
        student_vocab=student_vocab,
        teacher_vocab=teacher_vocab,
        temperature=temperature,
        depth=depth,
    )
    with torch.no_grad():
        if same:
            nodes, teacher = _in_row(walk, teacher_logits)
        else:
            assert batch is not None and teacher_forward is not None
            nodes, teacher = _in_tree(walk, teacher_logits, batch, teacher_forward, mask_dtype)
    if not nodes:
        empty = torch.zeros(
            (0, STOP + 1), dtype=torch.promote_types(student_logits.dtype, torch.float32), device=student_logits.device
        )
        return TeacherPath(
            student=empty, teacher=empty.clone(), weights=empty.new_zeros(0), entries=np.zeros(0, np.int64), nodes=()
        )
    entries = np.array([node[0] for node in nodes], dtype=np.int64)
    at = (
        torch.from_numpy(frames.rows[entries]).to(student_logits.device),
        torch.from_numpy(frames.student_frames[entries]).to(student_logits.device),
    )
    paths = tuple(node[4] for node in nodes)
    student = _normalised_log(
        _next_byte_mass(student_logits, student_vocab, paths, temperature=temperature, stop=True, at=at)
    )
    weights = torch.tensor([node[5] for node in nodes], dtype=torch.float64).exp()
    return TeacherPath(
        student=student, teacher=teacher.to(student), weights=weights.to(student), entries=entries, nodes=paths
    )


def _starts(frames: ByteFrames) -> tuple[int, ...]:
    """The entries where both sides begin a token, read by the teacher (not its template text), not token ends."""
    empty = np.fromiter(
        (not s and not t for s, t in zip(frames.student_prefixes, frames.teacher_prefixes, strict=True)),
        dtype=np.bool_,
        count=len(frames),
    )
    return tuple(np.flatnonzero(empty & (frames.teacher_positions >= 0) & ~frames.token_ends).tolist())


def _sampled(frames: ByteFrames) -> dict[tuple[int, int], bytes]:
    """The bytes of the token the student sampled at each of its frames, as far as the entries read it."""
    sampled: dict[tuple[int, int], bytes] = {}
    columns = (frames.rows.tolist(), frames.student_frames.tolist(), frames.student_prefixes, frames.targets.tolist())
    for row, frame, prefix, target in zip(*columns, strict=True):
        read = prefix + bytes([target]) if target < 256 else prefix
        if len(read) > len(sampled.get((row, frame), b"")):
            sampled[row, frame] = read
    return sampled


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class _Walk:
    """What one call walks: the entries, where paths start, what the student sampled, both vocabularies."""

    frames: ByteFrames
    starts: tuple[int, ...]
    sampled: dict[tuple[int, int], bytes]
    student_vocab: ByteVocab
    teacher_vocab: ByteVocab
    temperature: float
    depth: int

    def goes_on(self, node: bytes) -> bool:
        """Whether the student has a longer token that begins with ``node``."""
        return len(self.student_vocab.members(node)[1]) > 0

    def off_sample(self, entry: int, node: bytes) -> bool:
        """Whether the token the student sampled at ``entry``'s frame does not begin with ``node``."""
        key = (int(self.frames.rows[entry]), int(self.frames.student_frames[entry]))
        return not self.sampled.get(key, b"").startswith(node)


def _in_row(walk: _Walk, logits: torch.Tensor) -> tuple[list[_Node], torch.Tensor]:
    """The same vocabulary: the teacher's likeliest next byte at each step, all in the entry's own row."""
    frames, device, pending = walk.frames, logits.device, []
    active = [(i, b"", 0.0) for i in walk.starts]  # (entry, node, log weight)
    for step in range(walk.depth):
        if not active:
            break
        index = torch.tensor([i for i, _, _ in active])
        at = (
            torch.from_numpy(frames.rows)[index].to(device),
            torch.from_numpy(frames.teacher_positions)[index].to(device),
        )
        prefixes = [u for _, u, _ in active]
        mass = _next_byte_mass(logits, walk.teacher_vocab, prefixes, temperature=walk.temperature, stop=step > 0, at=at)
        best, choice = _normalised_log(mass).max(-1)
        going = []
        for (i, u, weight), byte, logprob in zip(active, choice.tolist(), best.tolist(), strict=True):
            node = u + bytes([byte]) if byte < 256 else b""  # b"": the teacher ends the turn or stops the token
            if not node or not walk.goes_on(node):
                continue
            if walk.off_sample(i, node):
                pending.append((i, int(frames.rows[i]), int(frames.teacher_positions[i]), node, node, weight + logprob))
            going.append((i, node, weight + logprob))
        active = going
    return pending, _teacher_side(walk, logits, pending, same=True)


def _in_tree(
    walk: _Walk, logits: torch.Tensor, batch: TeacherBatch, forward: TeacherForward, mask_dtype: torch.dtype
) -> tuple[list[_Node], torch.Tensor]:
    """Another vocabulary: the teacher's likeliest token at each step, the nodes inside it read in its row, the
    node after it at a new position (one call of ``forward`` per step that goes on)."""
    frames, vocab = walk.frames, walk.teacher_vocab
    length = batch.input_ids.shape[1]
    tree: list[list[tuple[int, int, int]]] = [[] for _ in range(batch.input_ids.shape[0])]  # (id, parent, step)
    active = [(i, int(frames.rows[i]), int(frames.teacher_positions[i]), b"", 0.0) for i in walk.starts]
    nodes: list[_Node] = []
    teacher: list[torch.Tensor] = []
    for step in range(walk.depth):
        units = _likeliest(logits, [a[1] for a in active], [a[2] for a in active], len(vocab.token_bytes))
        paths: list[_Step] = []
        for a, unit in zip(active, units, strict=True):
            piece = vocab.token_bytes[unit]
            if piece and unit not in vocab.ends:  # else the teacher ends the turn here, or writes a control token
                paths.append((a, piece, unit))
        pending, going = [], []
        for ((i, row, slot, u, weight), piece, unit), logprobs in zip(paths, _along(walk, logits, paths), strict=True):
            along = (weight + np.cumsum(logprobs)).tolist()
            for k in range(1, len(piece)):  # nodes inside the teacher's token: its row, that token's bytes read
                node = u + piece[:k]
                if not walk.goes_on(node):
                    break
                if walk.off_sample(i, node):
                    pending.append((i, row, slot, piece[:k], node, along[k - 1]))
            else:
                node = u + piece
                if walk.goes_on(node):  # the node after the token: a new position reads it
                    tree[row].append((unit if vocab.token_ids is None else vocab.token_ids[unit], slot, step))
                    going.append((i, row, length + len(tree[row]) - 1, node, along[-1]))
        nodes += pending
        teacher.append(_teacher_side(walk, logits, pending, same=False))
        if not going:
            break
        inputs = _tree_inputs(batch.input_ids, batch.attention_mask, tree, mask_dtype)
        logits = forward(inputs)
        expected = tuple(inputs["input_ids"].shape)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or tuple(logits.shape[:2]) != expected:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise AlignmentError(f"teacher_forward must return {expected} + (W',) logits for its inputs, got {got}")
        pending = [(i, row, slot, b"", node, w) for i, row, slot, node, w in going if walk.off_sample(i, node)]
        nodes += pending
        teacher.append(_teacher_side(walk, logits, pending, same=False))
        active = going
    return nodes, torch.cat(teacher) if teacher else logits.new_zeros((0, STOP + 1))


def _along(walk: _Walk, logits: torch.Tensor, paths: list[_Step]) -> list[np.ndarray]:
    """For each path's step ``((entry, row, slot, node, weight), piece, unit)``: the teacher's log-probability of
    each byte of ``piece`` after those before it, read at ``(row, slot)`` in one batched call."""
    if not paths:
        return []
    device = logits.device
    rows = torch.tensor([a[1] for a, piece, _ in paths for _ in piece], device=device)
    slots = torch.tensor([a[2] for a, piece, _ in paths for _ in piece], device=device)
    prefixes = [piece[:k] for _, piece, _ in paths for k in range(len(piece))]
    targets = torch.tensor([byte for _, piece, _ in paths for byte in piece], device=device)
    mass = _next_byte_mass(
        logits, walk.teacher_vocab, prefixes, temperature=walk.temperature, stop=False, at=(rows, slots)
    )
    read = _normalised_log(mass).gather(1, targets[:, None])[:, 0].double().cpu().numpy()
    return np.split(read, np.cumsum([len(piece) for _, piece, _ in paths])[:-1])


def _teacher_side(walk: _Walk, logits: torch.Tensor, pending: list[_Node], *, same: bool) -> torch.Tensor:
    """``(N, 258)`` the teacher's side at ``pending`` nodes, read in ``logits``: its next byte after the bytes of
    its token read there, seen through the student's token after the node's bytes (with the same vocabulary, both
    are the node, read with :data:`~alignment.nextbyte.STOP`)."""
    if not pending:
        return logits.new_zeros((0, STOP + 1), dtype=torch.promote_types(logits.dtype, torch.float32))
    device = logits.device
    at = (torch.tensor([n[1] for n in pending], device=device), torch.tensor([n[2] for n in pending], device=device))
    prefixes, nodes = [n[3] for n in pending], [n[4] for n in pending]
    read = _normalised_log(
        _next_byte_mass(logits, walk.teacher_vocab, prefixes, temperature=walk.temperature, stop=same, at=at)
    )
    return read if same else fold_next_bytes(read, walk.student_vocab, nodes)


def _likeliest(logits: torch.Tensor, rows: list[int], slots: list[int], units: int) -> list[int]:
    """The teacher's likeliest unit at each ``(row, slot)``, gathering a few hundred rows of logits at a time."""
    found = []
    for start in range(0, len(rows), _ARGMAX_ROWS):
        r = torch.tensor(rows[start : start + _ARGMAX_ROWS], device=logits.device)
        s = torch.tensor(slots[start : start + _ARGMAX_ROWS], device=logits.device)
        found += logits[r, s, :units].argmax(-1).tolist()
    return found


def _tree_inputs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tree: list[list[tuple[int, int, int]]],
    mask_dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """The teacher's inputs with every row's path tokens (``(id, parent slot, step)``) after its ``S`` positions:
    ``input_ids``; a ``(B, 1, S + E, S + E)`` mask where a real position sees what it sees in the plain forward, a
    path token the real text up to its root, its path's tokens before it and itself, and padding itself; and
    ``position_ids``, a path token's its parent's plus one."""
    rows, length = input_ids.shape
    total = length + max((len(path) for path in tree), default=0)
    device = input_ids.device
    ids = torch.zeros((rows, total), dtype=torch.int64, device=device)
    ids[:, :length] = input_ids
    positions = torch.arange(total, device=device).repeat(rows, 1)
    keys = torch.arange(length, device=device)
    mask = torch.zeros((rows, total, total), dtype=torch.bool, device=device)
    mask[:, :length, :length] = (keys[:, None] >= keys[None, :]) & attention_mask.bool()[:, None, :]
    extra = torch.arange(length, total, device=device)
    flat = np.array(
        [(r, length + e, *token) for r, path in enumerate(tree) for e, token in enumerate(path)], dtype=np.int64
    ).reshape(-1, 5)
    for step in np.unique(flat[:, 4]):  # a step's parents are real positions or the step before's tokens
        r, slot, token, parent = (torch.from_numpy(c).to(device) for c in flat[flat[:, 4] == step, :4].T)
        ids[r, slot] = token
        positions[r, slot] = positions[r, parent] + 1
        mask[r, slot] = mask[r, parent]
        mask[r, slot, slot] = True  # and itself, before its children copy its row
    mask[:, extra, extra] = True  # padding sees itself
    return {"input_ids": ids, "attention_mask": as_mask_dtype(mask, mask_dtype)[:, None], "position_ids": positions}
