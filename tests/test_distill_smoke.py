"""Smoke test of the distillation benchmark (benchmarks/distill): every arm runs end to end through the public API."""

from __future__ import annotations

import json
import math

import pytest

pytestmark = pytest.mark.integration  # the benchmark uses ../shared/tokenizers (llama3, qwen3)

TINY = {
    "width": 32,
    "layers": 1,
    "heads": 2,
    "lr": 3e-3,
    "beta": 0.5,
    "temperature": 1.0,
    "on_policy": 0.5,
    "train": 60,
    "eval": 8,
    "teacher_steps": 3,
    "teacher_every": 2,
    "teachers": "matched",
    "teacher_batch": 4,
    "byte_examples": 4,
    "warmup_steps": 2,
    "student_steps": 3,
    "student_batch": 4,
    "eval_every": 3,
}


def every_arm() -> list[str]:
    from benchmarks.distill.run import ABLATIONS, ARMS

    return [*ARMS, *ABLATIONS]


@pytest.mark.parametrize("arm", every_arm())
def test_every_arm_runs_and_reports(arm: str, tmp_path) -> None:
    from benchmarks.distill.report import write_report
    from benchmarks.distill.run import BYTE_ARMS, run_student

    record = run_student("qwen->llama", arm, 0, {**TINY, "cache": str(tmp_path / "cache")})
    assert record["pair"] == "qwen->llama" and record["arm"] == arm and record["steps"] == 3
    assert 0.0 <= record["final_eval"] <= 1.0 and math.isfinite(record["final_loss"])
    assert [p["step"] for p in record["curve"]] == [0, 3]  # after the common warm-up, then at the end
    assert record["teacher_step"] in (None if arm == "sft" else 2, 3)  # checkpoints after 2 and 3 steps
    if arm in BYTE_ARMS:
        assert 0.0 < record["coverage"] <= 1.0 and 0.0 < record["teacher_shared_mass"] <= 1.0
        assert 0.9 < record["byte_coverage"] <= 1.0  # next-byte frames: nearly every byte of the common content
    curve = [{"step": step, "eval": step / 8} for step in range(1, 6)]  # every other checkpoint is shown, and the last
    write_report([record], tmp_path / "out", TINY, "test machine", 1.0, stem="distill-quick", teachers={"x": curve})
    saved = json.loads((tmp_path / "out" / "distill-quick.json").read_text())
    assert {"pair", "arm", "seed", "final_eval", "final_loss", "steps", "coverage"} <= set(saved[0])
    report = (tmp_path / "out" / "distill-quick.md").read_text()
    assert "| qwen->llama |" in report and "- x: 2: 0.250, 4: 0.500, 5: 0.625" in report
    source = {"sft": "reference answers", "same-family": "llama3"}.get(arm, "qwen3")
    assert f"| {arm} | {source} → llama3 |" in report


def test_the_branched_arm_reads_the_teachers_branches_on_a_pair_that_has_them(tmp_path, monkeypatch) -> None:
    """GPT-2 reads digits inside its tokens, so the branched arm's batches have branches, and the teacher reads
    each batch once, with the 4-D mask of ``branched_inputs()``."""
    import benchmarks.distill.run as distill
    from alignment import TeacherBatch

    branches, masks = [], []
    inputs, forward = TeacherBatch.branched_inputs, distill.TinyLM.forward

    def count_branches(self, **options):  # type: ignore[no-untyped-def]
        branches.append(int(self.branch_count.sum()))
        return inputs(self, **options)

    def count_masks(self, ids, attention, positions=None):  # type: ignore[no-untyped-def]
        masks.append(attention.ndim)
        return forward(self, ids, attention, positions)

    monkeypatch.setattr(TeacherBatch, "branched_inputs", count_branches)
    monkeypatch.setattr(distill.TinyLM, "forward", count_masks)
    record = distill.run_student("gpt2->mistral", "aligned-branched", 0, {**TINY, "cache": str(tmp_path)})
    assert math.isfinite(record["final_loss"]) and 0.9 < record["byte_coverage"] <= 1.0
    assert len(branches) == TINY["student_steps"] == masks.count(4) and all(n > 0 for n in branches)


def test_matched_teachers_are_the_checkpoints_closest_to_the_weaker_final_teacher() -> None:
    from benchmarks.distill.run import pick_checkpoint

    strong = [
        {"step": 250, "eval": 0.2},
        {"step": 500, "eval": 0.41},
        {"step": 750, "eval": 0.5},
        {"step": 1000, "eval": 0.9},
    ]
    weak = [{"step": 250, "eval": 0.1}, {"step": 500, "eval": 0.45}, {"step": 750, "eval": 0.4}]
    curves = {"strong": strong, "weak": weak}
    assert pick_checkpoint(curves, "strong", "final") == strong[-1]
    assert pick_checkpoint(curves, "weak", "final") == weak[-1]
    assert pick_checkpoint(curves, "strong", "matched") == strong[1]  # 0.41 is closest to the weaker final 0.40
    assert pick_checkpoint(curves, "weak", "matched") == weak[-1]
    tied = {
        "a": [{"step": 1, "eval": 0.3}, {"step": 2, "eval": 0.5}, {"step": 3, "eval": 0.3}],
        "b": [{"step": 1, "eval": 0.3}],
    }
    assert pick_checkpoint(tied, "a", "matched") == {"step": 3, "eval": 0.3}  # a tie goes to the later checkpoint
    by_bytes = {
        "x": [{"step": 1, "eval": 0.1, "byte": 0.5}, {"step": 2, "eval": 0.4, "byte": 0.7}],
        "y": [{"step": 1, "eval": 0.4, "byte": 0.6}, {"step": 2, "eval": 0.5, "byte": 0.9}],
    }
    assert pick_checkpoint(by_bytes, "y", "matched") == by_bytes["y"][0]  # exact match 0.4, as x's final
    assert pick_checkpoint(by_bytes, "y", "byte-matched") == by_bytes["y"][0]  # 0.6 is closest to x's final 0.7
    assert pick_checkpoint(by_bytes, "x", "byte-matched") == by_bytes["x"][1]  # the weaker teacher: its last


def test_byte_matched_teachers_are_scored_once_and_picked_by_their_byte_skill(tmp_path) -> None:
    from benchmarks.distill.run import load_family, run_student, teacher_of, train_teacher, with_byte_scores
    from benchmarks.distill.task import make_task

    config = {**TINY, "cache": str(tmp_path), "teachers": "byte-matched"}
    train, held_out = make_task(config["train"], config["eval"])
    curves = {
        name: train_teacher(load_family(name, train + held_out), train, held_out, config)
        for name in ("qwen3", "llama3")
    }
    scored = with_byte_scores("qwen->llama", curves, config)
    assert [[p["step"] for p in scored[n]] for n in ("qwen3", "llama3")] == [[2, 3], [2, 3]]
    assert all(0.0 < p["byte"] < 1.0 for n in scored for p in scored[n])
    (cache,) = tmp_path.glob("bytes-*.json")
    written = cache.stat().st_mtime_ns
    assert with_byte_scores("qwen->llama", curves, config) == scored and cache.stat().st_mtime_ns == written
    weaker = min(scored, key=lambda n: scored[n][-1]["byte"])
    target = scored[weaker][-1]["byte"]
    name, used = teacher_of("qwen->llama", "aligned", curves, config)
    closest = min(scored["qwen3"], key=lambda p: (abs(p["byte"] - target), -p["step"]))
    assert name == "qwen3" and used == closest
    record = run_student("qwen->llama", "aligned", 0, config)
    assert record["teachers"] == "byte-matched" and record["teacher_byte"] == closest["byte"]
    from benchmarks.distill.report import write_report

    write_report([record], tmp_path / "out", config, "test machine", 1.0, stem="distill-bytes", teachers=curves)
    row = f"{closest['eval']:.3f} ({closest['step']}); P(byte) {closest['byte']:.3f} |"
    assert row in (tmp_path / "out" / "distill-bytes.md").read_text()


def test_a_cached_teacher_without_its_curve_is_trained_again(tmp_path) -> None:
    # a run stopped after saving the final weights but before the curve: the checkpoints may be missing
    from benchmarks.distill.run import load_family, teacher_path, train_teacher
    from benchmarks.distill.task import make_task

    config = {**TINY, "cache": str(tmp_path)}
    train, held_out = make_task(config["train"], config["eval"])
    family = load_family("qwen3", train + held_out)
    teacher_path("qwen3", config).parent.mkdir(parents=True, exist_ok=True)
    teacher_path("qwen3", config).write_bytes(b"stale")
    curve = train_teacher(family, train, held_out, config)
    assert [point["step"] for point in curve] == [2, 3]
    assert all(teacher_path("qwen3", config, point["step"]).exists() for point in curve)
    assert train_teacher(family, train, held_out, config) == curve  # cached now


def test_early_checkpoints_are_added_to_a_cached_teacher_by_training_it_again(tmp_path) -> None:
    from benchmarks.distill.run import checkpoint_steps, load_family, teacher_path, train_teacher
    from benchmarks.distill.task import make_task

    full = {"teacher_every": 250, "teacher_early": 25, "teacher_steps": 6000}
    assert checkpoint_steps(full)[:11] == [*range(25, 275, 25), 500] and checkpoint_steps(full)[-1] == 6000
    assert checkpoint_steps({**full, "teacher_early": 0}) == list(range(250, 6250, 250))
    config = {**TINY, "teacher_steps": 6, "teacher_every": 4, "cache": str(tmp_path)}
    train, held_out = make_task(config["train"], config["eval"])
    family = load_family("qwen3", train + held_out)
    curve = train_teacher(family, train, held_out, config)
    assert [point["step"] for point in curve] == [4, 6]
    final = teacher_path("qwen3", config).stat().st_mtime_ns
    refined = train_teacher(family, train, held_out, {**config, "teacher_early": 1})
    assert [point["step"] for point in refined] == [1, 2, 3, 4, 6]
    assert [point for point in refined if point["step"] >= 4] == curve  # the cached points stay as they were
    assert all(teacher_path("qwen3", config, step).exists() for step in (1, 2, 3))
    assert teacher_path("qwen3", config).stat().st_mtime_ns == final  # the final teacher is not written again
    assert train_teacher(family, train, held_out, {**config, "teacher_early": 1}) == refined  # cached now


def test_early_checkpoints_are_refused_when_training_again_gives_another_model(tmp_path) -> None:
    import torch

    from benchmarks.distill.run import load_family, teacher_path, train_teacher
    from benchmarks.distill.task import make_task

    config = {**TINY, "teacher_steps": 6, "teacher_every": 4, "cache": str(tmp_path)}
    train, held_out = make_task(config["train"], config["eval"])
    family = load_family("qwen3", train + held_out)
    train_teacher(family, train, held_out, config)
    state = torch.load(teacher_path("qwen3", config, 4))
    name = next(iter(state))
    state[name] = state[name] + 1e-3  # as if the cached teacher came from other code or another machine
    torch.save(state, teacher_path("qwen3", config, 4))
    with pytest.raises(RuntimeError, match="did not reproduce its cached checkpoint at step 4"):
        train_teacher(family, train, held_out, {**config, "teacher_early": 1})


def test_teachers_may_be_larger_than_their_students_and_are_cached_apart(tmp_path) -> None:
    import torch

    from benchmarks.distill.run import model_key, run_student, teacher_path

    config = {**TINY, "cache": str(tmp_path), "teacher_size": [48, 2, 4], "teacher_device": "cpu"}
    assert model_key(config) == "60-32x1x2-taskvocab" and model_key(config, teacher=True) == "60-48x2x4-taskvocab"
    same_size = {**TINY, "cache": str(tmp_path)}
    assert teacher_path("qwen3", config) != teacher_path("qwen3", same_size)  # another model: another cache entry
    record = run_student("qwen->llama", "aligned", 0, config)
    assert math.isfinite(record["final_loss"])
    teacher = torch.load(teacher_path("qwen3", config, 3))
    assert teacher["head.weight"].shape[1] == 48 and "body.layers.1.mlp.up_proj.weight" in teacher
    assert all(value.device.type == "cpu" for value in teacher.values())
    student = torch.load(next(tmp_path.glob("warmup-llama3-*.pt")))
    assert student["head.weight"].shape[1] == 32 and "body.layers.1.mlp.up_proj.weight" not in student


def test_teachers_only_trains_the_teachers_and_writes_no_results(tmp_path, monkeypatch, capsys) -> None:
    import sys

    import benchmarks.distill.run as distill

    preset = {**TINY, "pairs": ["qwen->llama"], "arms": ["aligned"], "seeds": [0], "teachers": ["final"]}
    monkeypatch.setattr(distill, "PRESETS", {"full": preset})
    out = tmp_path / "out"
    argv = ["run", "--teachers-only", "--workers", "1", "--cache", str(tmp_path / "cache"), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    distill.main()
    printed = capsys.readouterr().out
    assert "teacher llama3: held-out exact match by step 2:" in printed and "teacher qwen3:" in printed
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.json")) == [
        "teacher-llama3-3-60-32x1x2-taskvocab.json",
        "teacher-qwen3-3-60-32x1x2-taskvocab.json",
    ]
    assert not out.exists()


def test_the_teachers_left_out_mass_is_on_its_tokens_that_end_where_it_has_read() -> None:
    import numpy as np
    import torch

    from alignment import ByteVocab
    from benchmarks.distill.run import teacher_left_out

    class Frames:  # the fields of ByteFrames that teacher_left_out reads
        rows = np.array([0, 0, 0, 0])
        teacher_positions = np.array([0, 0, -1, 1])  # -1: the student's template text
        teacher_prefixes = (b"4", b"", b"", b"48")

        def __len__(self) -> int:
            return 4

    vocab = ByteVocab(token_bytes=(b"4", b"48", b"482", b"5"), ends=frozenset())
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]])
    left_out = teacher_left_out(Frames(), logits, vocab, 1.0)
    e2 = math.exp(2.0)
    # after "4": "4" of "4", "48", "482"; at a boundary and at template text nothing; after "48": "48" of "48", "482"
    torch.testing.assert_close(left_out, torch.tensor([1 / 3, 0.0, 0.0, e2 / (e2 + 1)]))


def test_the_acceptance_table_compares_aligned_with_same_family_per_pair_and_teachers() -> None:
    from benchmarks.distill.report import _acceptance

    def record(arm: str, teachers: str, final: float, losses: list[float]) -> dict:
        curve = [{"step": 0, "loss": float("nan"), "eval": 0.0}] + [
            {"step": k, "loss": x} for k, x in enumerate(losses)
        ]
        return {"pair": "p", "arm": arm, "teachers": teachers, "final_eval": final, "curve": curve}

    records = [
        record("same-family", "matched", 0.50, [1.0, 0.5]),
        record("aligned", "matched", 0.50, [1.0, 0.5, 0.6]),
        record("aligned", "matched", 0.48, [1.0, 0.4]),
        record("naive", "matched", 0.0, [1.0]),
        record("same-family", "final", 0.50, [1.0]),
        record("aligned", "final", 0.30, [1.0, 0.3, 0.7]),  # rose above twice its lowest point: diverged
        record("aligned-branched", "final", 0.55, [1.0, 0.5]),  # above the same-family eval: within
        record("aligned-bytes", "final", 0.55, [1.0, 0.5]),  # an ablation: not held to the bar
        record("aligned-chain-greedy", "final", 0.45, [1.0, 0.5]),  # held to the bar: 0.9 is not within
    ]
    rows = _acceptance(records)[2:]
    assert rows == [
        "| p | final | aligned | 0.500 | 0.300 | 0.600 | no | no | n/a |",
        "| p | final | aligned-branched | 0.500 | 0.550 | 1.100 | yes | yes | n/a |",
        "| p | final | aligned-chain-greedy | 0.500 | 0.450 | 0.900 | no | yes | n/a |",
        "| p | matched | aligned | 0.500 | 0.490 | 0.980 | yes | yes | 0.000 |",
    ]


def test_runs_that_would_learn_from_the_same_checkpoint_run_once() -> None:
    from benchmarks.distill.run import _as_job, _shared

    curves = {
        "qwen3": [{"step": 1, "eval": 0.3}, {"step": 2, "eval": 0.6}],  # stronger: matched checkpoint is step 1
        "llama3": [{"step": 1, "eval": 0.1}, {"step": 2, "eval": 0.3}],  # weaker: final and matched are step 2
    }
    jobs = [
        ("qwen->llama", arm, 0, {"teachers": mode})
        for arm in ("aligned", "same-family", "sft")
        for mode in ("matched", "final")
    ]
    unique, owners = _shared(jobs, curves)
    assert [(j[1], j[3]["teachers"]) for j in unique] == [
        ("aligned", "matched"),
        ("aligned", "final"),
        ("same-family", "matched"),
        ("sft", "matched"),
    ]
    assert owners == [0, 1, 2, 2, 3, 3]
    shared = _as_job({"arm": "same-family", "teachers": "matched", "final_eval": 0.5}, jobs[3])
    assert shared == {"arm": "same-family", "teachers": "final", "final_eval": 0.5, "same_run_as": "matched"}
    assert _as_job({"arm": "sft", "teachers": "n/a"}, jobs[5]) == {"arm": "sft", "teachers": "n/a"}


def test_the_outputs_script_prints_the_students_answers_token_by_token(tmp_path, monkeypatch, capsys) -> None:
    import sys

    import benchmarks.distill.run as distill
    from benchmarks.distill import outputs

    monkeypatch.setattr(distill, "PRESETS", {"full": TINY})
    argv = ["outputs", "--arm", "aligned", "--steps", "2", "--show", "3", "--cache", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    outputs.main()
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("held-out exact match") for line in printed) == 2  # after the warm-up, at the end
    answers = [line for line in printed if "->" in line]
    assert len(answers) == 6 and all(line.rstrip().endswith("]") for line in answers)


def test_the_leftout_script_prints_the_left_out_mass_on_references_and_samples(tmp_path, monkeypatch, capsys) -> None:
    import sys

    import benchmarks.distill.run as distill
    from benchmarks.distill import leftout

    monkeypatch.setattr(distill, "PRESETS", {"full": TINY})
    argv = ["leftout", "--pair", "qwen->llama", "--examples", "6", "--teachers", "final", "--cache", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    leftout.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| completions | right |") and len(rows) == 7  # two tables: a header, then rows
    assert rows[1].startswith("| reference answers | 6/6 | ") and rows[2].startswith("| student's samples | ")
    # Qwen3 writes one digit per token, so the teacher reads no byte of a reference answer inside one of its tokens
    assert rows[1].endswith("| 0 | n/a | n/a |")
    # then, at each sample's first wrong byte, the cross-family teacher without and with branches, and Llama 3's
    assert rows[3].startswith("| teacher | reads | samples with an error |")
    assert [row.split(" | ")[1] for row in rows[4:]] == ["without branches", "with branches", "same-family"]
    assert rows[4].startswith("| qwen3 (step ") and rows[6].startswith("| llama3 (step ")
    counts = [int(row.split(" | ")[2]) for row in rows[4:]]  # one first error at most per sample, the same bytes
    assert counts[0] == counts[1] and all(0 <= n <= 6 for n in counts)


def test_the_entries_script_splits_the_loss_by_kind_of_entry(tmp_path, monkeypatch, capsys) -> None:
    import sys

    import benchmarks.distill.run as distill
    from benchmarks.distill import entries

    monkeypatch.setattr(distill, "PRESETS", {"full": TINY})
    argv = ["entries", "--pair", "llama->llama", "--examples", "6", "--cache", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    entries.main()
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| ") and line[2:3] != "-"]
    rows = [row for row in rows if row[1] != "entries"]  # not the headers
    assert rows[0][0] == "| next-byte, every entry"
    kinds = {
        "| next-byte, at a student token boundary (not the student's template)",
        "| next-byte, the student's template text",
        "| next-byte, inside a student token",
        "| next-byte, after a student token: the text ends the turn",
        "| next-byte, after a student token: the text goes on",
    }
    counts = [int(row[1]) for row in rows if row[0] in kinds]
    assert len(counts) >= 3 and int(rows[0][1]) == sum(counts)  # the kinds split the entries
    labels = [row[0] for row in rows]
    assert "| next-byte, every entry weighted by `prefix_weights`" in labels
    assert "| every entry" in labels  # aligned-greedy: a teacher with the student's vocabulary
    for row in rows:  # a cosine is a cosine, twice
        assert -1.0 <= float(row[4]) <= 1.0 and -1.0 <= float(row[5].rstrip(" |")) <= 1.0 and float(row[3]) >= 0.0
    assert "token-level, the student's own family's teacher: loss " in out
    assert "read with" in out and "folded" in out


def test_reuse_carries_over_only_what_this_command_did_not_run(tmp_path) -> None:
    from benchmarks.distill.report import _reuse_lines
    from benchmarks.distill.run import _reused

    old = [
        {"pair": "p", "arm": "aligned", "teachers": "matched", "seed": 0},
        {"pair": "p", "arm": "same-family", "teachers": "matched", "seed": 0},
        {"pair": "p", "arm": "same-family", "teachers": "final", "seed": 0},
    ]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    new = [{"pair": "p", "arm": "aligned", "teachers": "matched", "seed": 0}]
    kept = _reused(path, new)
    assert kept == [{**old[1], "reused_from": str(path)}, {**old[2], "reused_from": str(path)}]
    assert _reuse_lines(new) == []
    assert _reuse_lines(new + kept)[0].endswith(": p same-family (final); p same-family (matched).")


def test_every_arm_has_its_own_colour_on_every_page() -> None:
    from benchmarks.distill.report import ARM_COLORS
    from benchmarks.distill.run import ABLATIONS, ARMS

    assert set(ARM_COLORS) == {*ARMS, *ABLATIONS}
    assert len(set(ARM_COLORS.values())) == len(ARM_COLORS)


def test_the_control_pair_teaches_llama_through_the_byte_loss_from_its_own_teacher(tmp_path) -> None:
    """``llama->llama``: the aligned arm on the identity path, with the same teacher as the same-family arm."""
    from benchmarks.distill.run import run_student

    config = {**TINY, "cache": str(tmp_path)}
    aligned = run_student("llama->llama", "aligned", 0, config)
    same = run_student("llama->llama", "same-family", 0, config)
    assert aligned["teacher"] == aligned["student"] == same["teacher"] == "llama3"
    assert aligned["teacher_step"] == same["teacher_step"] and math.isfinite(aligned["final_loss"])
    assert aligned["coverage"] == 1.0 and aligned["byte_coverage"] is None  # nothing rendered for the teacher
    assert aligned["final_loss"] != same["final_loss"]  # another loss on the same samples


def test_the_rendered_control_pair_takes_the_aligned_path_with_a_teacher_of_the_same_family(tmp_path) -> None:
    """``llama->llama-rendered``: the aligned arm's teacher renders and tokenizes the text itself."""
    import benchmarks.distill.run as distill

    seen = []
    original = distill.prepare_teacher_batch

    def spy(*args, **options):  # type: ignore[no-untyped-def]
        batch = original(*args, **options)
        seen.append(batch.aligned)
        return batch

    config = {**TINY, "cache": str(tmp_path)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(distill, "prepare_teacher_batch", spy)
        record = distill.run_student("llama->llama-rendered", "aligned", 0, config)
        assert seen and all(seen)  # re-rendered for the teacher: not the identity path
        seen.clear()
        distill.run_student("llama->llama-rendered", "same-family", 0, config)
        assert seen and not any(seen)
    assert record["teacher"] == record["student"] == "llama3" and 0.9 < record["byte_coverage"] <= 1.0
