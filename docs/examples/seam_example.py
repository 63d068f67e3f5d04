"""Worked example for docs/teacher.md: a Llama 3 student, a Qwen3 teacher, one sampled completion.

Run from the repository root (needs ../shared/tokenizers): python docs/examples/seam_example.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from transformers import AutoTokenizer

from alignment import prepare_teacher_batch, project_logprobs, render_prompt, vocab_projection

student_tok = AutoTokenizer.from_pretrained("../shared/tokenizers/llama3")
teacher_tok = AutoTokenizer.from_pretrained("../shared/tokenizers/qwen3")
llama = {"date_string": "26 Jul 2024"}
example = {"messages": [{"role": "user", "content": "b=97, a=4821305. What is a?"}]}

prompt = render_prompt(student_tok, example, **llama)
# pretend the student sampled "4821305" and stopped: Llama writes it as 482 130 5 <|eot_id|>
completion = [*student_tok.encode("4821305", add_special_tokens=False), student_tok.convert_tokens_to_ids("<|eot_id|>")]
print("student prompt ends:", repr(prompt.text[-60:]))
print("student completion :", student_tok.convert_ids_to_tokens(completion))

batch = prepare_teacher_batch(
    [example],
    [completion],
    student_tokenizer=student_tok,
    teacher_tokenizer=teacher_tok,
    prompt_ids=[prompt.input_ids],
    student_template_kwargs=llama,
)
teacher = batch.renderings[0]
print("teacher text       :", repr(teacher.text))
print("teacher tokens     :", teacher_tok.convert_ids_to_tokens(batch.input_ids[0].tolist())[-12:])
for k, token in enumerate(student_tok.convert_ids_to_tokens(completion)):
    j = int(batch.positions[0, k])
    context = teacher.text.encode()[: teacher.byte_offsets[j, 1]].decode()[-12:] if batch.mask[0, k] else "-"
    mask = bool(batch.mask[0, k])
    print(f"frame {k} predicts {token!r:14} teacher position {j:3d} (has read ...{context!r}) mask={mask}")
print("coverage:", batch.coverage)

projection = vocab_projection(student_tok, teacher_tok)
student_logits = torch.randn(1, len(completion), len(student_tok))
teacher_logits = torch.randn(*batch.input_ids.shape, len(teacher_tok))
s, t = project_logprobs(student_logits, teacher_logits, projection, teacher_positions=batch.positions)
print("projected shapes:", tuple(s.shape), tuple(t.shape), "classes:", projection.num_classes)
first = [student_tok.convert_tokens_to_ids("482"), teacher_tok.convert_tokens_to_ids("4")]
print(
    "class of Llama '482' == class of Qwen '4':",
    projection.student_classes[first[0]] == projection.teacher_classes[first[1]],
)
