"""``owlens pope run|score|toy``: POPE with the detector's verdict from the same E (docs/design.md §4)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from owlens.cli.common import (
    HelpFormatter,
    at_least,
    json_option,
    load_model,
    model_options,
    open_probability,
    output_file,
    output_folder,
    progress_options,
    scenes_option,
    seed_option,
    write_json,
)
from owlens.persist.lock import folder_lock

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.

_RUN_EPILOG = """\
Each row of ANSWERS: question_id, image, question, answer, parsed (yes/no as POPE's reference reads it),
p_yes (softmax over the first tokens of "yes"/"Yes" vs "no"/"No"), object, query, presence (p_c), presence_logit,
box_xyxy_px, flag, flag_score, threshold, label. Rerun the same command to resume: rows already written are
kept, a torn last line is dropped, nothing is answered twice, and the rows stay in question order. A resume
with other weights, questions, images or settings (ANSWERS.fingerprint.json) is refused, and so is a second
run on ANSWERS while one runs. A missing image is reported and its questions skipped (a rerun retries them).
The run folder ANSWERS minus its suffix plus ".run" (answers.run/ for answers.jsonl) holds run.json:
`owlens report answers.run` shows POPE's figures and the flagged answers with their boxes.

LLaVA-1.5's own POPE prompt:
  owlens pope run coco_pope_adversarial.json --images val2014 --out answers.jsonl \\
      --owl google/owlvit-base-patch32 --mllm llava-hf/llava-1.5-7b-hf --projector ./w-owl-llava \\
      --suffix $'\\nAnswer the question using a single word or phrase.'

several GPUs (Hugging Face accelerate): each process answers every n-th question into ANSWERS.part-i; when
all are done the main process merges them into ANSWERS in question order (an interrupted sharded run
resumes with any number of processes):
  accelerate launch --multi_gpu --num_processes 4 -m owlens pope run coco_pope_random.json --images val2014 \\
      --out answers.jsonl --owl ... --mllm ... --projector ... --dtype bf16
(several CPU processes: the same with --device cpu; `accelerate launch --cpu` starts one process only.)
"""


def register(subparsers) -> None:
    pope = subparsers.add_parser("pope", help="POPE: answer, score, and flag hallucinations with the detector")
    commands = pope.add_subparsers(dest="pope_command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run", parents=[model_options(), progress_options()],
        help="answer a POPE question file, with OWL's presence score per question",
        description="Answer every question of QUESTIONS (POPE JSONL: question_id, image, text, label) on the images "
                    "in --images, writing one JSON line per question to --out as it goes.",
        epilog=_RUN_EPILOG, formatter_class=HelpFormatter)
    run.add_argument("questions", help="POPE question file (JSON Lines)")
    run.add_argument("--images", required=True, metavar="DIR", help="folder holding the questions' images")
    run.add_argument("--out", required=True, metavar="ANSWERS", help="answers file (JSON Lines; resumed if present)")
    run.add_argument("--batch-size", type=at_least(1), default=16, help="questions per forward pass")
    run.add_argument("--max-new-tokens", type=at_least(1), default=16, help="answer length in tokens")
    run.add_argument("--suffix", default="", help="text appended to every question")
    run.add_argument("--threshold", type=open_probability, default=None,
                     help="τ on p_c for the stored flag (default: the model's calibration.json, else 0.5, said to be "
                          "uncalibrated; `pope score --calibrate` chooses one on another split)")
    run.add_argument("--fsync", action="store_true", help="fsync every row (also survives a power cut)")
    run.set_defaults(run=_run)

    score = commands.add_parser(
        "score", parents=[json_option()],
        help="POPE's figures (exactly its reference evaluation), and the flag's AUROC/AP",
        description="Accuracy, precision, recall, F1 and yes-ratio as POPE's evaluate.py computes them; for files "
                    "`pope run` wrote, also AUROC of p_c against the label and AUROC/AP of the flag against the "
                    "model's wrong answers.")
    score.add_argument("answers", help="answers (JSON Lines with 'answer' or 'text')")
    score.add_argument("questions", help="the POPE question file the answers belong to")
    score.add_argument("--calibrate", nargs=2, metavar=("CAL_ANSWERS", "CAL_QUESTIONS"),
                       help="choose the flag's τ and fit the combined flag on this other split (never on the one "
                            "scored)")
    score.add_argument("--save-calibration", metavar="DIR",
                       help="with --calibrate: write that calibration as DIR/calibration.json (the projector "
                            "folder of the model that answered, where check and describe --check read it)")
    score.set_defaults(run=_score)

    toy = commands.add_parser("toy", parents=[seed_option("fixes the scenes and the questions"),
                                              scenes_option(500, "test scenes (500 images, as POPE)",
                                                            old=("--images",))],
                              help="write POPE files for the toy world (random/popular/adversarial)",
                              description="Held-out toy scenes as PNG, toy_pope_{random,popular,adversarial,"
                                          "calibration}.json and truth.jsonl in OUT.")
    toy.add_argument("out", help="folder to write")
    toy.add_argument("--calibration-images", type=at_least(1), default=200, help="images of the calibration split")
    toy.set_defaults(run=_toy)


def _distributed(device: str):
    """accelerate's process state when launched with several processes, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    # Without cpu=True, processes launched on a machine with no GPU each believe they run alone.
    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def _run(args: argparse.Namespace) -> int:
    from owlens.hallucination.runner import PopeRunConfig, merge_parts, part_paths, run_pope

    output_file(args.out, expected="an answers file (JSON Lines)")  # before the model loads: a wrong --out
    output_folder(run_folder(args.out), "--out (its run folder)")  # costs seconds, not a load
    state = _distributed(args.device)
    shard = (state.process_index, state.num_processes) if state else (0, 1)
    if state:
        args.device = str(state.device)
    from owlens.hallucination.calibration import resolve_threshold

    model = load_model(args)
    threshold, _ = resolve_threshold(model, args.threshold)
    config = PopeRunConfig(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, prompt_suffix=args.suffix,
                           threshold=threshold.probability, fsync=args.fsync)
    main_process = state is None or state.is_main_process
    result = run_pope(model, args.questions, args.images, args.out, config, shard=shard,
                      progress=not args.no_progress and main_process, log=lambda m: print(m, file=sys.stderr))
    if state is None and result.skipped and not (result.answered or result.resumed):
        # Every question skipped: exit 0 with an empty answers file read as a finished run. The fingerprint
        # records the images as missing, so a rerun once they are in place answers them.
        raise ValueError(f"--images: none of the {len(result.missing_images)} images {args.questions} names could "
                         f"be read in {args.images} (e.g. {result.missing_images[0]}, see above); nothing answered "
                         "and no run folder written")
    if state:
        state.wait_for_everyone()
    if main_process and part_paths(args.out):
        merge_parts(args.out, args.questions)
    if main_process:
        _browsable(args, model)
    print(f"shard {shard[0] + 1}/{shard[1]}: {result.answered} answered, {result.resumed} already in {args.out}, "
          f"{result.skipped} skipped ({len(result.missing_images)} unreadable images)")
    return 0


def run_folder(answers: str) -> Path:
    """Where ``pope run --out ANSWERS`` writes its run.json: ANSWERS' stem + ".run", beside it."""
    answers = Path(answers)
    return answers.with_name(answers.stem + ".run")


def _browsable(args: argparse.Namespace, model) -> None:
    from owlens.browse import pope_run

    folder = run_folder(args.out)
    settings = {"questions": str(Path(args.questions).resolve()), "images": str(Path(args.images).resolve()),
                "max_new_tokens": args.max_new_tokens, "suffix": args.suffix, "threshold": args.threshold}
    with folder_lock(folder):
        pope_run(folder, Path(args.out).resolve(), Path(args.questions), Path(args.images).resolve(), model, settings)
    print(f"run folder: {folder} (`owlens report {folder}`)", file=sys.stderr)


def _score(args: argparse.Namespace) -> int:
    from owlens.hallucination.report import score_files

    report = score_files(args.answers, args.questions, calibration=tuple(args.calibrate) if args.calibrate else None,
                         save_calibration_to=args.save_calibration)
    if args.json:
        write_json(report.to_dict())
        return 0
    pope = report.pope
    print(f"TP {pope.tp}  FP {pope.fp}  TN {pope.tn}  FN {pope.fn}  ({report.n_answered} of {report.n_questions} "
          "questions answered)")
    for name in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
        print(f"{name:>10}: {getattr(pope, name):.4f}")
    if report.flag is not None:
        flag = report.flag
        how = "calibrated" if flag.calibrated else "uncalibrated, from the rows"
        print(f"presence AUROC (p_c vs label): {report.presence_auroc:.4f}")
        print(f"flag at τ = {flag.threshold.probability:.4f} ({how}): {flag.n_flagged} flagged, {flag.n_wrong} wrong; "
              f"AUROC {flag.flag_auroc:.4f}, AP {flag.flag_ap:.4f} (detector alone AUROC "
              f"{flag.presence_only_auroc:.4f}, MLLM doubt AUROC {flag.mllm_doubt_auroc:.4f})")
        if flag.combined_n_flagged or flag.combined_auroc == flag.combined_auroc:  # NaN: no combined flag fitted
            lo, hi = flag.combined_minus_doubt_auroc[1:]
            print(f"combined flag (detector + MLLM, fitted on the calibration split): AUROC {flag.combined_auroc:.4f}, "
                  f"AP {flag.combined_ap:.4f}, {flag.combined_n_flagged} flagged; minus MLLM doubt "
                  f"{flag.combined_minus_doubt_auroc[0]:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    return 0


def _toy(args: argparse.Namespace) -> int:
    from owlens.evaluation.toy_pope import build_toy_pope

    output_folder(args.out, "OUT")
    files = build_toy_pope(args.out, seed=args.seed, n_images=args.scenes, calibration_images=args.calibration_images)
    write_json(files.to_dict())
    return 0
