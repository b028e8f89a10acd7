"""Serving a generation run on loopback: `transferkit serve`'s OpenAI routes against a plain `transformers`
generate loop behind FastAPI (issue 30), driven by the same stock `openai` client.

One finished `transferkit finetune --task generate` run (`--run`), its own test prompts (the first `--prompts`,
the run's test split rebuilt as `transferkit evaluate` rebuilds it; prompts of one user turn), each variant in
its own spawned child process on 127.0.0.1:

    ours      `create_app(ModelSet({"m": run}))`, the app `transferkit serve --adapter m=RUN` runs, in uvicorn:
              POST /v1/completions formats the prompt with the run's template, decodes greedily with the run's
              predictor (a LoRA/IA3 run: its adapter kept unmerged on the base, `inference/switched.py`), one request
              at a time per run, in a thread beside the event loop
    baseline  what a user writes without transferkit: the run's model loaded with stock calls (a LoRA/IA3 run:
              `PeftConfig.from_pretrained(RUN/adapter)` -> `AutoModelForCausalLM.from_pretrained(base)` ->
              `PeftModel.from_pretrained(...).merge_and_unload()`; a full run: `AutoModelForCausalLM.
              from_pretrained(RUN/model)`; float32 as the run trained), a plain sync FastAPI route
              /v1/completions that renders the prompt as the run did (the tokenizer's chat template with the
              generation prompt when run.json head.generation.template is "chat", else the prompt and a
              newline), `model.generate(do_sample=False, max_new_tokens, eos_token_id)` under a lock (one
              request at a time) and OpenAI's text_completion JSON, so the same client drives it

Each child pins torch to `--threads` and runs its server in a thread and the client in the same process: an
`openai.OpenAI(base_url=http://127.0.0.1:PORT/v1)` client shared by a thread pool that keeps C requests in
flight (C = each of `--concurrency`, default 1 and 8), one prompt per request, `temperature=0` and the same
`max_tokens` (default: the run's own budget, run.json head.generation.max_new_tokens). After one untimed
warm-up request, every prompt is sent once per level. Reported per variant and level: completions/s,
completion tokens/s (the servers' usage counts), p50/p99 latency (ms, nearest rank: of 64 requests, p99 is the
slowest) and the answers; and the
ratio ours / baseline of completions/s per level. Neither server batches concurrent requests (each runs one
generate at a time), so concurrency adds queueing, not throughput: the ratio measures what each server adds
around the same model.

Correctness: ours' greedy answers are checked against the offline prediction of the same run, in a third
child: `Predictor.from_run(run).predict(prompts, max_new_tokens=...)` (`generated_text`; it generates 16 prompts
per left-padded batch and merges the adapter, so a rare token may differ in float rounding from a lone prompt on
the unmerged adapter); reported as the fraction of prompts with the same text. The baseline's agreement is
reported too, for information (it renders the same text, but does not cut prompts longer than the run's
max_length as transferkit does: how many were cut is reported).

Usage:
    python benchmarks/serve_generate.py --run RUN_DIR                   # 64 prompts, C = 1 and 8 (an estimate:
                                                                        #   ~6 min for SmolLM2-135M on 2 cores)
    python benchmarks/serve_generate.py --run RUN_DIR --concurrency 1,4,8 --prompts 32 --max-tokens 16
    python benchmarks/serve_generate.py --run RUN_DIR --quick           # 4 prompts, C = 1 and 2, 4 tokens: a
                                                                        #   smoke run, not a measurement
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_common_args, environment, in_child, peak_rss_mb, print_table, quiet_libraries,  # noqa: E402
                     ratio, set_threads, write_json)

from pydantic import BaseModel, ConfigDict  # noqa: E402

MODEL_NAME = "m"  # the name both servers answer for


class CompletionBody(BaseModel):
    """The baseline's request: what the openai client sends (other fields ignored). At module level: FastAPI
    reads the route's annotation by name."""

    model_config = ConfigDict(extra="ignore")
    model: str
    prompt: str
    max_tokens: int = 16
    temperature: float = 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_prompts(run: Path, n: int) -> tuple[list[str], str, int]:
    """The first `n` test prompts of one user turn, (prompts, where they came from, prompts left out as not one
    user turn). The run's test split is rebuilt as `transferkit evaluate` does (its data files checked); a run
    whose data cannot be read again falls back to its report's rows (RUN/report/evaluation.json)."""
    from transferkit.core.errors import UserError
    from transferkit.core.runs import RunInfo
    from transferkit.inference.loading import labelled_split, run_task
    info = RunInfo.read(run)
    try:
        split, source = labelled_split(run, info, run_task(info), None, None, None)
        lone = [t[0][1] for t in split.prompts if len(t) == 1 and t[0][0] == "user"]
        return lone[:n], source, len(split.prompts) - len(lone)
    except UserError as e:
        path = run / "report" / "evaluation.json"
        if not path.is_file():
            raise SystemExit(f"{run}: its test split cannot be rebuilt ({e}) and it has no {path}") from None
        print(f"test split not rebuilt ({e}); prompts from {path}", file=sys.stderr)
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
        return [r["prompt"] for r in rows][:n], str(path), 0


# ---- children ------------------------------------------------------------------------------------------------
def run_offline(spec: dict[str, Any]) -> dict[str, Any]:
    """The reference answers: `Predictor.from_run(run).predict(prompts)`, the run's own greedy decoding."""
    set_threads(spec["threads"])
    quiet_libraries()
    from transferkit.inference import Predictor
    from transferkit.tasks.generate.format import prompt_ids
    predictor = Predictor.from_run(spec["run"])
    prompts, budget = spec["prompts"], spec["max_tokens"]
    predictor.predict(prompts[:1], max_new_tokens=budget)  # warm-up
    t0 = time.perf_counter()
    rows = predictor.predict(prompts, max_new_tokens=budget)
    seconds = time.perf_counter() - t0
    task = predictor.task
    room = max(8, predictor.max_length - task.max_new_tokens)  # where transferkit cuts a prompt (prompt_token_ids)
    full = prompt_ids(predictor.tokenizer, [(("user", p),) for p in prompts], task.template)
    return {"answers": [r["generated_text"] for r in rows], "seconds": round(seconds, 3),
            "completions_per_s": round(len(prompts) / seconds, 3), "prompt_tokens": [len(x) for x in full],
            "prompts_cut": sum(len(x) > room for x in full), "prompt_room": room,
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def baseline_app(run: Path, template: str) -> Any:
    """A plain transformers generate loop behind FastAPI, in OpenAI's /v1/completions shape (module docstring)."""
    import uuid

    import torch
    from fastapi import FastAPI
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if (run / "adapter" / "adapter_config.json").is_file():
        from peft import PeftConfig, PeftModel
        config = PeftConfig.from_pretrained(run / "adapter")
        base = AutoModelForCausalLM.from_pretrained(config.base_model_name_or_path, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, run / "adapter").merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
    elif (run / "model" / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(run / "model", dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(run / "model")
    else:
        raise SystemExit(f"{run}: neither adapter/adapter_config.json nor model/config.json; the baseline cannot "
                         "load it with stock calls")
    model.eval()
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/completions")
    def completions(req: CompletionBody) -> dict[str, Any]:
        if template == "chat":
            text = tokenizer.apply_chat_template([{"role": "user", "content": req.prompt}], tokenize=False,
                                                 add_generation_prompt=True)
        else:
            text = req.prompt + "\n"
        # the chat template writes its own special tokens
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=template != "chat")
        with lock, torch.no_grad():  # one request at a time
            out = model.generate(**inputs, do_sample=False, max_new_tokens=req.max_tokens,
                                 eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                 else tokenizer.eos_token_id)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        if tokenizer.eos_token_id in new:
            new = new[:new.index(tokenizer.eos_token_id)]
            reason = "stop"
        else:
            reason = "length"
        n_prompt = int(inputs["input_ids"].shape[1])
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": req.model,
                "choices": [{"index": 0, "text": tokenizer.decode(new, skip_special_tokens=True).strip(),
                             "finish_reason": reason, "logprobs": None}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(new),
                          "total_tokens": n_prompt + len(new)}}

    return app


def ours_app(run: Path) -> Any:
    from transferkit.serving.app import create_app
    from transferkit.serving.models import ModelSet
    return create_app(ModelSet({MODEL_NAME: str(run)}), default_model=MODEL_NAME)


def drive(port: int, prompts: list[str], levels: list[int], max_tokens: int) -> dict[str, Any]:
    """Every prompt once per concurrency level through the stock openai client (a thread pool keeps C requests in
    flight); completions/s, latencies, answers."""
    import openai
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=600)

    def one(prompt: str) -> tuple[float, str | None, int, str | None, str | None]:
        t0 = time.perf_counter()
        try:
            r = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=max_tokens, temperature=0)
        except Exception as e:  # noqa: BLE001 - counted and shown, the run goes on
            return time.perf_counter() - t0, None, 0, None, f"{type(e).__name__}: {str(e)[:300]}"
        return (time.perf_counter() - t0, r.choices[0].text, r.usage.completion_tokens if r.usage else 0,
                r.choices[0].finish_reason, None)

    warm = one(prompts[0])  # untimed: the first generate call pays one-time costs
    if warm[4] is not None:
        raise RuntimeError(f"the warm-up request failed: {warm[4]}")
    out: dict[str, Any] = {}
    for c in levels:
        with ThreadPoolExecutor(max_workers=c) as pool:
            t0 = time.perf_counter()
            got = list(pool.map(one, prompts))
            wall = time.perf_counter() - t0
        lat = sorted(g[0] for g in got if g[4] is None)
        errors = [g[4] for g in got if g[4] is not None]
        tokens = sum(g[2] for g in got)
        out[str(c)] = {
            "concurrency": c, "completions": len(lat), "failed": len(errors),
            "first_error": errors[0] if errors else None,
            "wall_s": round(wall, 3), "completions_per_s": round(len(lat) / wall, 3),
            "completion_tokens": tokens, "completion_tokens_per_s": round(tokens / wall, 2),
            "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
            "mean_ms": round(1000 * statistics.fmean(lat), 1) if lat else None,
            "finish_reasons": {r: sum(g[3] == r for g in got) for r in sorted({g[3] for g in got if g[3]})},
            "answers": [g[1] for g in got]}
        print(f"  C={c}: {out[str(c)]['completions_per_s']:.2f} completions/s, p50 {out[str(c)]['p50_ms']} ms, "
              f"{len(errors)} failed", file=sys.stderr, flush=True)
    client.close()
    return out


def run_server(spec: dict[str, Any]) -> dict[str, Any]:
    """One variant's server in uvicorn on a thread of this child, driven by the client from this child."""
    set_threads(spec["threads"])
    quiet_libraries()
    import uvicorn
    run = Path(spec["run"])
    t0 = time.perf_counter()
    app = ours_app(run) if spec["variant"] == "ours" else baseline_app(run, spec["template"])
    load_s = time.perf_counter() - t0
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError(f"{spec['variant']}: uvicorn did not start on port {port}")
        time.sleep(0.05)
    try:
        levels = drive(port, spec["prompts"], spec["levels"], spec["max_tokens"])
    finally:
        server.should_exit = True
        thread.join(60)
    return {"load_s": round(load_s, 2), "levels": levels, "peak_rss_mb": round(peak_rss_mb(), 1)}


# ---- main ----------------------------------------------------------------------------------------------------
def agreement(answers: list[str | None], reference: list[str]) -> float:
    return round(sum(a == r for a, r in zip(answers, reference)) / max(len(reference), 1), 4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, "serve_generate")
    p.add_argument("--run", type=Path, required=True, help="a finished `transferkit finetune --task generate` run")
    p.add_argument("--prompts", type=int, default=None, help="test prompts sent per level (default 64; quick 4)")
    p.add_argument("--concurrency", default=None, help="requests in flight, comma-separated (default 1,8; quick 1,2)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="new tokens per completion (default: the run's own budget; quick 4)")
    p.add_argument("--variants", default="ours,baseline", help="a subset of ours,baseline")
    args = p.parse_args(argv)
    quick = {"prompts": 4, "concurrency": "1,2", "max_tokens": 4} if args.quick else {}
    args.prompts = args.prompts or quick.get("prompts", 64)
    args.concurrency = args.concurrency or quick.get("concurrency", "1,8")
    levels = [int(c) for c in args.concurrency.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    if any(v not in ("ours", "baseline") for v in variants) or any(c < 1 for c in levels):
        raise SystemExit("--variants: ours and/or baseline; --concurrency: positive integers")
    run = args.run.resolve()
    head = json.loads((run / "run.json").read_text(encoding="utf-8"))
    if head.get("task") != "generate":
        raise SystemExit(f"{run} is a {head.get('task')!r} run, not a generation run")
    generation = head.get("head", {}).get("generation", {})
    template = generation.get("template", "plain")
    args.max_tokens = args.max_tokens or quick.get("max_tokens") or int(generation.get("max_new_tokens", 64))

    set_threads(args.threads)
    quiet_libraries()
    env = environment(args.threads)
    prompts, source, skipped = load_prompts(run, args.prompts)
    if not prompts:
        raise SystemExit(f"{run}: no test prompt of one user turn to send")
    print(f"{len(prompts)} prompts from {source} ({skipped} of several turns left out), max_tokens {args.max_tokens}, "
          f"template {template}, concurrency {levels}", file=sys.stderr, flush=True)
    base = {"run": str(run), "prompts": prompts, "max_tokens": args.max_tokens, "threads": args.threads,
            "levels": levels, "template": template}
    print("offline Predictor.predict in a child process ...", file=sys.stderr, flush=True)
    offline = in_child(run_offline, base)
    results: dict[str, Any] = {}
    for v in variants:
        print(f"{v} server in a child process ...", file=sys.stderr, flush=True)
        results[v] = in_child(run_server, {**base, "variant": v})

    reference = offline["answers"]
    rows = []
    for v, r in results.items():
        for c, lv in r["levels"].items():
            lv["agreement_with_offline"] = agreement(lv["answers"], reference)
            rows.append([v, c, lv["completions_per_s"], lv["completion_tokens_per_s"], lv["p50_ms"], lv["p99_ms"],
                         f"{100 * lv['agreement_with_offline']:.1f}%", lv["failed"], r["peak_rss_mb"]])
    print()
    print_table(["server", "concurrency", "completions/s", "tokens/s", "p50 ms", "p99 ms", "same as offline",
                 "failed", "peak RSS MB"], rows)
    print(f"offline Predictor.predict (batches of 16): {offline['completions_per_s']:.2f} completions/s; "
          f"{offline['prompts_cut']} of {len(prompts)} prompts longer than the run's {offline['prompt_room']} "
          "prompt tokens (cut by transferkit, whole in the baseline)")
    ratios: dict[str, Any] = {}
    if "ours" in results and "baseline" in results:
        for c in map(str, levels):
            o, b = results["ours"]["levels"][c], results["baseline"]["levels"][c]
            ratios[c] = {"completions_per_s": ratio(o["completions_per_s"], b["completions_per_s"]),
                         "p50_ms": ratio(o["p50_ms"], b["p50_ms"]),
                         "ours_vs_baseline_answers": agreement(o["answers"], b["answers"])}
            print(f"C={c}: ours / baseline {ratios[c]['completions_per_s']}x completions/s, p50 latency "
                  f"{ratios[c]['p50_ms']}x; answers the same on {100 * ratios[c]['ours_vs_baseline_answers']:.1f}% "
                  "of prompts")
    if "ours" in results:
        worst = min(lv["agreement_with_offline"] for lv in results["ours"]["levels"].values())
        print(f"ours' answers equal offline predict on {100 * worst:.1f}% of prompts (the lowest over levels)")
    write_json(args.out, {"benchmark": "serve_generate", "quick": args.quick, "environment": env,
                          "settings": vars(args) | {"out": str(args.out), "run": str(run), "levels": levels},
                          "run": {"template": template, "max_new_tokens": generation.get("max_new_tokens"),
                                  "method": head.get("method"), "model": head.get("model_name")},
                          "prompts": {"source": source, "n": len(prompts), "left_out_multi_turn": skipped,
                                      "texts": prompts},
                          "offline": offline, "results": results, "ratios": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
