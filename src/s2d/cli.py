"""The ``s2d`` command line: one console script with a subcommand per job.

Every subcommand parses its arguments here and calls library functions; no logic lives in the
CLI beyond choosing paths and printing. Bad input raises :class:`s2d.errors.S2DError`, which
:func:`main` prints as one line (``s2d: error: <path>: <problem>``) with exit status 2 — never a
traceback. Heavy imports (torch, PyAV, OpenCV) happen inside the subcommands so ``s2d --help``
is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from s2d import __version__
from s2d.device import DEVICE_HELP, resolve_device
from s2d.errors import InputError, S2DError, SettingError

#: exit statuses, the same for every command (``s2d --help`` and the README list them)
EXIT_SOME_FAILED = 1  # some inputs failed (each reported in one line); the others are done
EXIT_BAD_INPUT = 2  # bad invocation, setting or input: nothing was done
EXIT_INTERRUPTED = 130
EXIT_STATUS_HELP = ("exit status (every command):\n"
                    "  0    done\n"
                    "  1    some inputs failed, each reported in one line; the others are done\n"
                    "  2    bad invocation, setting or input; nothing was done\n"
                    "  130  interrupted (Ctrl-C)")

_FORMATTER = argparse.RawDescriptionHelpFormatter


def _add_eval(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "eval",
        help="score results: YouTube-VIS AP/AR or DAVIS J&F (equal to the official tools)",
        description="Score segmentation results against ground truth. The metrics equal the official "
                    "YouTube-VIS cocoapi fork (ytvoseval.py) and davis2017-evaluation to within 1e-4.",
        formatter_class=_FORMATTER,
    )
    esub = p.add_subparsers(dest="benchmark", metavar="{ytvis,davis}", required=True)

    y = esub.add_parser(
        "ytvis",
        help="YouTube-VIS AP/AR (video mask IoU, COCO protocol)",
        description="YouTube-VIS AP, AP50, AP75, APs/APm/APl, AR1, AR10, AR100 with video-level mask IoU "
                    "sum_t|P∩G| / sum_t|P∪G| and the COCO protocol (IoU .50:.05:.95, 101-point precision).",
        epilog="example:\n  s2d eval ytvis --gt valid_gt.json --pred results.json --class-agnostic --json metrics.json",
        formatter_class=_FORMATTER,
    )
    y.add_argument("--gt", required=True, metavar="GT.json", help="YouTube-VIS dataset JSON (videos, annotations, categories)")
    y.add_argument("--pred", required=True, metavar="RESULTS.json",
                   help="YouTube-VIS results JSON: [{video_id, category_id, segmentations, score}]")
    y.add_argument("--class-agnostic", action="store_true",
                   help="ignore categories: pool all GT and all predictions per video (useCats=0), "
                        "as unsupervised VIS is scored")
    y.add_argument("--json", metavar="OUT", help="also write the metrics as JSON to OUT")
    y.set_defaults(func=_cmd_eval_ytvis)

    d = esub.add_parser(
        "davis",
        help="DAVIS J (region IoU), F (boundary), J&F with recall and decay",
        description="DAVIS J&F as in davis2017-evaluation. Protocols:\n"
                    "  unsupervised  one Hungarian matching of predicted ids to GT ids per sequence on mean (J+F)/2;\n"
                    "                at most 20 proposals per sequence (the 20 largest are kept); unmatched GT scores 0\n"
                    "  semi          predicted id k is scored against GT object k (semi-supervised / binary)\n"
                    "  union         all predicted ids merged into one mask vs the union of GT objects\n"
                    "                (the headline for binary DAVIS-2016 ground truth)",
        epilog="GT layout: a DAVIS root holding Annotations/480p/<seq>/*.png, or a folder of <seq>/ folders.\n"
               "Prediction layout: DIR/<seq>/*.png or the `s2d segment` layout DIR/<seq>/davis/*.png,\n"
               "one indexed PNG per GT frame (0 = background, ids 1..255).\n\n"
               "example:\n  s2d eval davis --gt ../shared/data/davis2016 --pred out/ --protocol union --json jf.json",
        formatter_class=_FORMATTER,
    )
    d.add_argument("--gt", required=True, metavar="ROOT", help="DAVIS root or folder of sequence folders with GT PNGs")
    d.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted sequence folders (indexed PNGs)")
    d.add_argument("--protocol", choices=["unsupervised", "semi", "union"], default="unsupervised",
                   help="how predicted ids are matched to GT objects (default: unsupervised)")
    d.add_argument("--sequences", nargs="+", metavar="SEQ", help="score only these sequences (default: all in GT)")
    d.add_argument("--json", metavar="OUT", help="also write the full report (per sequence and object) as JSON")
    d.set_defaults(func=_cmd_eval_davis)


def _add_export(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "export",
        help="convert results between YouTube-VIS JSON, DAVIS PNGs, MOTS txt, CVAT XML, FiftyOne and overlay mp4",
        description="Convert segmentation results from one format to another, or draw them over the video.\n\n"
                    "Input formats (chosen by what IN is, or by --from):\n"
                    "  ytvis  a .json file: YouTube-VIS results list or dataset (GT) dict, RLE masks\n"
                    "  davis  a folder of indexed PNGs (one per frame) — or of such folders, one per video\n"
                    "  mots   a .txt file with lines 'frame id class_id h w rle'\n"
                    "  cvat   a .xml file: CVAT for video 1.1 (masks or polygons; e.g. labels corrected in CVAT)\n\n"
                    "Outputs (-o):\n"
                    "  ytvis    a JSON file (results format; --dataset writes the dataset/GT format)\n"
                    "  davis    a folder of PNGs; with several videos, one subfolder per video\n"
                    "  mots     a .txt file; with several videos, a folder of <video>.txt\n"
                    "  overlay  an .mp4 with coloured masks, contours and ids; needs --video (frames of one video)\n"
                    "  cvat     CVAT for video 1.1 XML: one mask per object and frame, the object id in the attribute\n"
                    "           track_id; with several videos, a folder of <video>.xml\n"
                    "  fiftyone a FiftyOne video dataset named OUT (per-frame fo.Detection masks, index = track id);\n"
                    "           needs --video and pip install 's2d[fiftyone]'",
        epilog="examples:\n"
               "  s2d export results.json --to davis -o pngs/\n"
               "  s2d export pngs/bikes --to mots -o bikes.txt\n"
               "  s2d export results.json --to overlay --video bikes.mp4 -o bikes_overlay.mp4\n"
               "  s2d export results.json --to cvat -o bikes.xml\n"
               "  s2d export bikes.xml --to ytvis --dataset --video bikes.mp4 -o labelset.json\n"
               "  s2d export results.json --to fiftyone --video bikes.mp4 -o bikes",
        formatter_class=_FORMATTER,
    )
    p.add_argument("input", metavar="IN", help="results to convert (JSON file, PNG folder, MOTS txt or CVAT XML)")
    p.add_argument("--to", required=True, choices=["ytvis", "davis", "mots", "overlay", "cvat", "fiftyone"],
                   help="output format")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file or folder (see above)")
    p.add_argument("--from", dest="src_format", choices=["ytvis", "davis", "mots", "cvat"],
                   help="input format when it cannot be told from IN")
    p.add_argument("--video", metavar="SRC",
                   help="the source video (file, frame folder or glob): frames for overlays; also gives "
                        "fps, frame names and the frame count")
    p.add_argument("--video-id", type=int, metavar="ID",
                   help="with a multi-video YouTube-VIS input, export only this video_id")
    p.add_argument("--gt", metavar="GT.json",
                   help="YouTube-VIS dataset JSON giving sizes, lengths and names of the videos of a results file")
    p.add_argument("--dataset", action="store_true",
                   help="with --to ytvis: write the dataset (GT) format; with --video also a labelset that "
                        "`s2d train --videos <folder of the video>` reads")
    p.add_argument("--score-threshold", type=float, default=0.0, metavar="S",
                   help="drop tracks scoring below S (default 0: keep all)")
    p.set_defaults(func=_cmd_export)


def _add_masks(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "masks",
        help="stage 1: single-frame unsupervised instance masks (normalized cuts on motion + features)",
        description="Stage 1 of S2D: up to K unsupervised instance masks per frame, no labels.\n"
                    "Motion-led on CPU: camera-compensated optical flow (DIS) gives a motion affinity and a\n"
                    "motion-saliency mask; backbone features (lite0 by default; DINO with --backbone\n"
                    "dino_vits16:PATH) and optional depth maps refine the graph; iterative normalized cuts\n"
                    "propose masks, a dense CRF snaps them to image edges, and each gets a score in [0, 1].\n\n"
                    "Output: a YouTube-VIS results JSON with one record per single-frame mask (its RLE on its\n"
                    "frame, null on all others, its score, category_id 1, and 'frame' = the frame index),\n"
                    "masks at the input's original resolution. `s2d discover --masks FILE` reads it.",
        epilog="examples:\n"
               "  s2d masks bikes.mp4 -o bikes_masks.json\n"
               "  s2d masks frames/ -o masks.json --max-masks 5 --overlay masks.mp4\n"
               "  s2d masks bikes.mp4 -o m.json --backbone dino_vits16:dino_deitsmall16_pretrain.pth --device cuda\n"
               "  s2d masks bikes.mp4 -o m.json --depth depth_maps/ --set refine=none --set max_tokens=768",
        formatter_class=_FORMATTER,
    )
    p.add_argument("input", metavar="INPUT", help="a video file (mp4/avi/mov/mkv/webm), a frame folder or a glob")
    p.add_argument("-o", "--output", required=True, metavar="OUT.json", help="results JSON to write (atomically)")
    p.add_argument("--backbone", default="lite0", metavar="NAME[:PATH]",
                   help="feature backbone: lite0 (default, ImageNet EfficientNet-Lite0), dino_vits16, dino_vits8, "
                        "dino_vitb8, dinov2_vits14, resnet50 (with :PATH to the official checkpoint), random; "
                        "'none' for motion only")
    p.add_argument("--motion", action=argparse.BooleanOptionalAction, default=True,
                   help="use optical-flow motion cues (default: on; --no-motion for appearance only)")
    p.add_argument("--max-masks", type=int, default=None, metavar="K",
                   help="normalized cuts per frame (default 3; the motion-saliency mask may add one)")
    p.add_argument("--max-side", type=int, default=None, metavar="PX",
                   help="process frames resized to this long side (default: as stored; internal steps "
                        "work at <= 512 px anyway); masks are written at the original size")
    p.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP + "; of the backbone")
    p.add_argument("--depth", metavar="DIR",
                   help="folder of per-frame depth maps (<frame name>.npy or 16/8-bit .png; larger = farther) "
                        "for the 3-D cue")
    p.add_argument("--config", metavar="YAML", help="YAML file of mask settings (a mapping, or its 'masks:' section)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one mask setting (repeatable), e.g. --set refine=none; "
                        "see s2d.frames.MaskConfig for the keys")
    p.add_argument("--overlay", metavar="OUT.mp4", help="also draw the masks over the (processed) frames into an mp4")
    p.set_defaults(func=_cmd_masks)


def _add_discover(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "discover",
        help="stage 2: keymask discovery with a point tracker -> sparse pseudo-labels for training",
        description="Stage 2 of S2D: turn noisy single-frame masks into temporally coherent keymasks with\n"
                    "object identities. For every video: stage-1 masks (computed here, or read with --masks),\n"
                    "a point grid inside every mask tracked through the whole video, visibility grouping\n"
                    "(DBSCAN), propagate-and-match, and DBSCAN over the match matrix -> objects whose member\n"
                    "masks are the keymasks.\n\n"
                    "Output folder: videos/<name>.<hash>.json per video (written atomically), settings.json,\n"
                    "failed.jsonl (videos that failed; the others go on, and the exit status is 1), and\n"
                    "pseudo_labels.json: the merged YouTube-VIS dataset (one category 'object'; masks on\n"
                    "keymask frames, null elsewhere; videos named by their path relative to the inputs' root)\n"
                    "that `s2d train` reads.",
        epilog="inputs: video files and frame folders, or ONE dataset root with --layout:\n"
               "  ytvis    ROOT/JPEGImages/<video>/*.jpg\n"
               "  davis    ROOT/JPEGImages/480p/<seq>/*.jpg\n"
               "  folders  ROOT/<video>/ frame folders and/or ROOT/<video>.mp4 files\n\n"
               "examples:\n"
               "  s2d discover bikes.mp4 -o runs/discover\n"
               "  s2d discover ../shared/data/davis2016 --layout davis -o runs/davis --workers 2\n"
               "  s2d discover ../shared/data/davis2016 --layout davis -o runs/davis --workers 2 --resume\n"
               "  s2d discover DATA --layout folders -o runs/big --ray auto",
        formatter_class=_FORMATTER,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files / frame folders, or a dataset root with --layout")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--layout", choices=["ytvis", "davis", "folders"],
                   help="the single INPUT is a dataset root in this layout (never guessed from its name)")
    p.add_argument("--root", metavar="DIR",
                   help="root the video names are relative to (default: the dataset root, or the inputs' "
                        "common parent folder); `s2d train --videos` takes the same folder")
    p.add_argument("--masks", metavar="PATH",
                   help="read stage-1 masks (`s2d masks` output) instead of computing them: a JSON for one "
                        "video, or a folder of <video name>.json files")
    p.add_argument("--method", default="keymask", choices=["keymask", "flowcut"],
                   help="keymask: keymask discovery with the point tracker (default); flowcut: FlowCut-style "
                        "matching of masks between nearby frames by IoU after flow warping (settings as "
                        "--set flowcut.KEY=VALUE: k, iou_threshold, min_length, ...)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="videos processed in parallel (default 1)")
    p.add_argument("--ray", metavar="auto|ADDRESS",
                   help="run the videos as Ray tasks: 'auto' (running cluster or a local one) or a cluster "
                        "address; needs pip install 's2d[ray]'")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch/OpenCV threads of each worker or Ray task, and the CPUs Ray reserves per task "
                        "(default: the workers share the machine's cores; a Ray task 1)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run in OUTDIR: finished videos are skipped, failed ones retried "
                        "(the settings must be the same)")
    p.add_argument("--tracker", default="flow", metavar="NAME[:PATH]",
                   help="point tracker: flow (chained DIS flow, default), lk (Lucas-Kanade; slower) or "
                        "cotracker3:PATH (the learned CoTracker3 offline model; PATH = the official "
                        "scaled_offline.pth, downloaded by you; CUDA when present)")
    p.add_argument("--backbone", default="lite0", metavar="NAME[:PATH]", help="stage-1 feature backbone (see s2d masks)")
    p.add_argument("--max-side", type=int, default=None, metavar="PX", help="stage 1 works at this long side")
    p.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP + "; of the stage-1 backbone")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a keymask setting (repeatable), e.g. --set visibility_threshold=0.3; "
                        "stage-1 settings as masks.KEY=VALUE, tracker settings as tracker.KEY=VALUE")
    p.add_argument("--cache-dir", metavar="DIR", help="where trackers spill flow fields of long videos (default: temp)")
    p.set_defaults(func=_cmd_discover)


def _add_train(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "train",
        help="stage 3: sparse-to-dense distillation of a class-agnostic video Mask2Former",
        description="Stage 3 of S2D: train a class-agnostic video Mask2Former on the sparse keymask\n"
                    "pseudo-labels of `s2d discover` (stage 'distill': student with Temporal DropLoss on the\n"
                    "keymasks plus an EMA teacher's confident predictions as a second target set), then\n"
                    "predict the training videos densely (score >= threshold, at 576 px, keymasks kept)\n"
                    "and train on that dense labelset (stage 'self-distill'), in rounds: each round's\n"
                    "labels come from the previous round's model (self_distill_rounds, default 2).\n\n"
                    "Clips are read ahead by data.num_workers worker processes (default 2).\n"
                    "Run folder: metrics.jsonl (losses, lr, sec_per_iter and data_time, the seconds per step\n"
                    "spent waiting for clips), train_config.json, <stage>/last.pt (resumable, written\n"
                    "atomically), <stage>/model.pt (each stage's model: distill, self-distill,\n"
                    "self-distill-2...), dense_labels.json (dense_labels_2.json...), and model.pt:\n"
                    "the result, compact (float16) - `s2d segment --model RUN_DIR/model.pt` runs it.\n"
                    "Stage 'online' (not run by default) distils model.pt into a per-frame model whose\n"
                    "queries carry over from frame to frame: online/model.pt and online.pt, for\n"
                    "`s2d segment --online --model RUN_DIR/online.pt` (settings online.*).\n"
                    "A NaN/Inf loss stops with a message and keeps the last good checkpoint.",
        epilog="examples:\n"
               "  s2d train --data runs/discover/pseudo_labels.json --videos ../shared/data -o runs/train\n"
               "  s2d train --data pl.json --videos ROOT -o runs/train --resume\n"
               "  s2d train --data pl.json --videos ROOT -o runs/t --config paper --set solver.max_iter=2000\n"
               "  s2d train --data pl.json --videos ROOT -o runs/t --stages distill\n"
               "  s2d train --data pl.json --videos ROOT -o runs/train --stages online\n"
               "  torchrun --nproc-per-node 2 -m s2d train --data pl.json --videos ROOT -o runs/ddp",
        formatter_class=_FORMATTER,
    )
    p.add_argument("--data", required=True, metavar="PSEUDO.json", help="pseudo-labels (pseudo_labels.json of s2d discover)")
    p.add_argument("--videos", required=True, metavar="ROOT",
                   help="root the pseudo-labels' video names are relative to (the root s2d discover used)")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument("--config", default="cpu", metavar="cpu|paper|tiny|FILE",
                   help="training preset or a YAML file (default cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable), e.g. solver.lr=1e-4, data.size=[256,448], "
                        "model.num_queries=20")
    p.add_argument("--stages", nargs="+", choices=["distill", "self-distill", "online"], metavar="STAGE",
                   help="run only these stages: distill, self-distill, online (default: distill self-distill)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoints")
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help=DEVICE_HELP + " (under torchrun: cuda:LOCAL_RANK)")
    p.set_defaults(func=_cmd_train)


def _add_segment(sub: "argparse._SubParsersAction") -> None:
    from s2d.infer.config import BACKENDS, DEFAULT_FORMATS, DEFAULT_REFINE, FORMATS, REFINE_MODES, SegmentConfig

    d = SegmentConfig()
    p = sub.add_parser(
        "segment",
        help="stage 4: segment and track every object in videos with a trained model (streaming)",
        description="Stage 4 of S2D: run a trained class-agnostic video Mask2Former over videos or frame\n"
                    "folders and export every object's masks with ids that persist over the video. No prompts,\n"
                    "no labels. The video streams through the model in chunks of L frames that overlap by K;\n"
                    "tubes are linked across chunks by mask IoU on the shared frames and by the similarity of\n"
                    "their query embeddings (link_embed), and results are written\n"
                    "frame by frame, so memory does not grow with the video's length. An object missed for\n"
                    "up to track_memory frames gets its id back when it returns; ids are never given to\n"
                    "another object.\n"
                    "Masks are at the input's original resolution; overlaps go to the higher score.\n\n"
                    "Outputs for an input named NAME (a video file's stem or a frame folder's name):\n"
                    "  ytvis    OUTDIR/NAME/results.json   YouTube-VIS results (RLE masks, one record per track)\n"
                    "  davis    OUTDIR/NAME/davis/*.png    palette PNGs named after the input frames (00000.png...\n"
                    "                                      for video files), 0 = background, pixel = track id\n"
                    "  mots     OUTDIR/NAME/mots.txt       MOTS txt ('frame id class_id h w rle')\n"
                    "  overlay  OUTDIR/NAME/overlay.mp4    masks, contours and ids drawn over the video\n\n"
                    "A video that fails (missing, unreadable, corrupt part-way: its outputs keep the frames\n"
                    "decoded before the bad one) is reported and the others go on; the exit status is then 1.\n"
                    "A live source runs until its stream ends or Ctrl-C; Ctrl-C then completes its outputs\n"
                    "with the frames so far (exit status 130).",
        epilog="examples:\n"
               "  s2d segment ../shared/data/videos/bikes.mp4 -o out\n"
               "  s2d segment a.mp4 b.mp4 frames/ -o out --format ytvis,davis,mots,overlay\n"
               "  s2d segment bikes.mp4 -o out --model runs/train/model.pt --score-threshold 0.7\n"
               "  s2d segment long.mp4 -o out --chunk 16 --overlap 4 --max-side 640 --refine crf --device cuda\n"
               "  s2d segment rtsp://camera.local/live -o out --online\n"
               "  ffmpeg -i clip.mp4 -f mpegts - | s2d segment - -o out --online\n"
               "  s2d segment bikes.mp4 -o out --backend onnxruntime --model default.onnx\n"
               "  s2d eval davis --gt ../shared/data/davis2016 --pred out/ --protocol union",
        formatter_class=_FORMATTER,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files (mp4/avi/mov/mkv/webm), frame folders, or live sources: - (a stream on "
                        "stdin), rtsp:// http(s):// udp:// tcp:// URLs, /dev/videoN; each goes to OUTDIR/NAME/")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output root folder")
    p.add_argument("--model", default=d.model, metavar="default|PATH",
                   help="the packaged model (default) or a checkpoint written by `s2d train` (<run>/<stage>/model.pt); "
                        "with --backend onnxruntime a .onnx file written by `s2d export-model`")
    p.add_argument("--backend", choices=list(BACKENDS), default=d.backend,
                   help=f"run the model with PyTorch or with ONNX Runtime (the extra s2d[onnx]; --model FILE.onnx "
                        f"from `s2d export-model`) (default {d.backend})")
    p.add_argument("--score-threshold", type=float, default=d.score_threshold, metavar="S",
                   help=f"an object needs a score of at least S in [0, 1] to start a track (default "
                        f"{d.score_threshold}); --set continue_threshold=X lets tracks go on above X")
    p.add_argument("--max-objects", type=int, default=d.max_objects, metavar="N",
                   help=f"at most N objects per chunk, highest scores first (default {d.max_objects})")
    p.add_argument("--chunk", type=int, default=d.chunk, metavar="L",
                   help=f"frames the model sees at once; memory grows with L (default {d.chunk})")
    p.add_argument("--overlap", type=int, default=d.overlap, metavar="K",
                   help=f"frames shared by consecutive chunks, 0 <= K < L; tracks are linked on them "
                        f"(default {d.overlap}; 0: chunks are linked by their last and first frames)")
    p.add_argument("--online", action="store_true",
                   help="one frame at a time: each frame's results are written before the next frame is read "
                        "(for live input; --chunk/--overlap are then 1/0). With --model default: the packaged "
                        "online model, whose queries carry over from frame to frame (s2d train --stages online)")
    p.add_argument("--max-side", type=int, default=d.max_side, metavar="PX",
                   help=f"the model runs on frames resized to this long side (default {d.max_side}); masks are "
                        f"written at the original size")
    p.add_argument("--refine", choices=list(REFINE_MODES), default=DEFAULT_REFINE,
                   help=f"mask edges: guided (a guided filter on the frame moves them onto image edges), crf (a "
                        f"dense CRF; erases low-contrast objects) or none, at <= {d.refine_max_side} px "
                        f"(default {DEFAULT_REFINE})")
    p.add_argument("--split", action=argparse.BooleanOptionalAction, default=d.split,
                   help="give each part of an object mask that lies apart from the rest (in space and over the "
                        f"chunk) its own id, e.g. two cars one query covers (default {'on' if d.split else 'off'})")
    p.add_argument("--device", default=d.device, metavar="DEVICE", help=DEVICE_HELP + "; of the model")
    p.add_argument("--format", dest="formats", default=",".join(DEFAULT_FORMATS), metavar="LIST",
                   help=f"comma-separated outputs among {','.join(FORMATS)} (default {','.join(DEFAULT_FORMATS)})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override another setting (repeatable), e.g. --set link_iou=0.5, --set track_memory=24, "
                        "--set refine_max_side=640; see s2d.infer.SegmentConfig for the keys")
    p.set_defaults(func=_cmd_segment)


def _add_export_model(sub: "argparse._SubParsersAction") -> None:
    from s2d.infer.onnx_backend import ExportSettings

    d = ExportSettings()
    p = sub.add_parser(
        "export-model",
        help="export the video model to ONNX for `s2d segment --backend onnxruntime`",
        description="Write the video model as an ONNX graph (PyTorch's dynamo exporter; the extra s2d[onnx]).\n"
                    "Input 'clip' T×3×H×W float RGB in [0, 1] with the clip length and frame size dynamic;\n"
                    "outputs pred_logits 1×Q×2 (object, no-object), pred_masks 1×Q×T×ceil(H/4)×ceil(W/4) mask\n"
                    "logits, pred_embeds 1×Q×C query embeddings. Normalisation and padding are inside the graph.\n"
                    "Online models (--stages online) cannot be exported.",
        epilog="examples:\n"
               "  s2d export-model default --onnx default.onnx\n"
               "  s2d export-model runs/train/self-distill/model.pt --onnx model.onnx --check\n"
               "  s2d segment bikes.mp4 -o out --backend onnxruntime --model model.onnx",
        formatter_class=_FORMATTER,
    )
    p.add_argument("model", metavar="MODEL", help="the packaged model (default) or a checkpoint written by `s2d train`")
    p.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=d.opset, metavar="N", help=f"ONNX opset, 17..23 (default {d.opset})")
    p.add_argument("--check", action="store_true",
                   help="run the file with ONNX Runtime on random clips of two sizes and lengths and print the "
                        "largest difference from PyTorch")
    p.set_defaults(func=_cmd_export_model)


def _add_report(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "report",
        help="a static HTML page of a run: overlay video, one row per object, timelines, eval plots",
        description="Write one HTML page about a run folder, opened from disk (no server, no JavaScript):\n"
                    "  s2d segment output   per video the overlay video, one row per object id (thumbnail, score,\n"
                    "                       first and last frame, area over time) and a timeline of the ids\n"
                    "  s2d discover output  per video each object's keymask frames and saliency (pseudo_labels.json)\n"
                    "  s2d eval davis JSON  in or beside OUTDIR (or --eval): J and F per sequence, J per frame\n\n"
                    "The page is OUTDIR/report.html (or -o), its pictures in report_files/ beside it.",
        epilog="examples:\n"
               "  s2d report out\n"
               "  s2d report runs/discover_bikes\n"
               "  s2d report out --eval jf.json -o out/index.html",
        formatter_class=_FORMATTER,
    )
    p.add_argument("outdir", metavar="OUTDIR", help="an s2d segment or s2d discover output folder")
    p.add_argument("-o", "--output", metavar="HTML", help="the page to write (default OUTDIR/report.html)")
    p.add_argument("--eval", dest="eval_reports", action="append", default=[], metavar="JSON",
                   help="an `s2d eval davis --json` report to plot (repeatable; reports in or beside OUTDIR "
                        "are found without it)")
    p.add_argument("--title", metavar="TEXT", help="the page title (default: the folder's name)")
    p.set_defaults(func=_cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2d",
        description="s2d — unsupervised video instance segmentation (S2D: Sparse-To-Dense Keymask "
                    "Distillation). Runs on CPU; CUDA where present.",
        epilog="Run `s2d COMMAND --help` for the options of a command.\n\n" + EXIT_STATUS_HELP,
        formatter_class=_FORMATTER,
    )
    parser.add_argument("--version", action="version", version=f"s2d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_masks(sub)
    _add_discover(sub)
    _add_train(sub)
    _add_segment(sub)
    _add_eval(sub)
    _add_export(sub)
    _add_export_model(sub)
    _add_report(sub)
    return parser


# --------------------------------------------------------------------------- commands
def _write_json(path: str, obj: object) -> None:
    from s2d.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2))
    print(f"wrote {path}", file=sys.stderr)


def _mask_config(args: argparse.Namespace):
    from s2d.frames import MaskConfig
    from s2d.settings import merge

    cfg = MaskConfig()
    if args.config:
        import yaml

        path = Path(args.config)
        if not path.is_file():
            raise InputError(path, "no such file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(path, f"cannot read YAML: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("masks"), dict):
            data = data["masks"]
        if not isinstance(data, dict):
            raise InputError(path, "expected a mapping of mask settings")
        try:
            cfg = merge(cfg, data, what="mask")
        except SettingError as exc:
            raise InputError(path, str(exc)) from None
    changes = {}
    if args.max_masks is not None:
        changes["max_masks"] = args.max_masks
    if not args.motion:
        changes["motion"] = False
    if args.backbone.lower() == "none":
        changes["use_features"] = False
    return merge(cfg, changes).with_overrides(args.overrides)


def _cmd_masks(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from s2d import rle as rle_utils
    from s2d.frames import FrameSegmenter, segment_video
    from s2d.io import formats
    from s2d.io.video import open_video

    cfg = _mask_config(args)
    src = Path(args.input)
    if not src.exists() and not any(ch in args.input for ch in "*?["):
        raise InputError(src, "no such file or directory")
    if args.depth and not Path(args.depth).is_dir():
        raise InputError(args.depth, "depth folder not found")

    device = resolve_device(args.device)
    backbone = None if (not cfg.use_features or args.backbone.lower() == "none") else args.backbone
    segmenter = FrameSegmenter(cfg, backbone=backbone, device=device)

    records = []  # (frame position, rle, score): RLEs only, so memory stays small on long videos
    names: List[str] = []
    overlay = None
    with open_video(args.input, max_side=args.max_side) as stream:
        info = stream.info
        H, W = info.orig_height, info.orig_width
        if args.overlay:
            from s2d.io.overlay import OverlayWriter

            overlay = OverlayWriter(args.overlay, info.fps or 25.0, info.width, info.height)
        try:
            bar = tqdm(segment_video(args.input, segmenter, depth_dir=args.depth, stream=stream,
                                     out_size=(H, W), keep_rgb=overlay is not None),
                       total=info.num_frames, desc="masks", unit="frame", disable=not sys.stderr.isatty())
            for pos, fm in enumerate(bar):
                names.append(fm.name)
                for m, sc in zip(fm.masks, fm.scores):
                    records.append((pos, rle_utils.encode(m), float(sc)))
                if overlay is not None:
                    assert fm.rgb is not None  # kept: keep_rgb=True when writing an overlay
                    fr = fm.to_frame_result()
                    if (fm.rgb.shape[0], fm.rgb.shape[1]) != (H, W) and len(fr):
                        from s2d.frames.refine import resize_mask
                        from s2d.types import FrameResult

                        # a list of masks: FrameResult.__post_init__ makes it the N×H×W array
                        fr = FrameResult(fr.index, [resize_mask(m, fm.rgb.shape[:2]) for m in fr.masks],  # type: ignore[arg-type]
                                         fr.ids, fr.scores)
                    overlay.write(fm.rgb, fr)
        except BaseException:
            if overlay is not None:
                overlay.abort()
            raise
        if overlay is not None:
            overlay.close()
    T = len(names)
    if T == 0:
        raise InputError(args.input, "no frames")
    with formats.YtvisResultsWriter(args.output) as writer:  # record by record: no O(T^2) string in memory
        for i, (pos, rle, score) in enumerate(records):
            segs: List[Optional[dict]] = [None] * T
            segs[pos] = rle
            writer.write({"video_id": 1, "category_id": 1, "score": round(score, 6), "frame": pos,
                          "track_id": i + 1, "segmentations": segs})
    print(f"wrote {args.output} ({len(records)} masks on {T} frames of {W}x{H})", file=sys.stderr)
    if overlay is not None:
        print(f"wrote {args.overlay}", file=sys.stderr)
    return 0


def _cmd_eval_ytvis(args: argparse.Namespace) -> int:
    from s2d.eval.ytvis import evaluate_ytvis, format_ytvis_table, load_ytvis_gt, load_ytvis_results

    gt = load_ytvis_gt(args.gt)
    results = load_ytvis_results(args.pred, gt=gt)
    metrics = evaluate_ytvis(gt, results, class_agnostic=args.class_agnostic)
    print(format_ytvis_table(metrics))
    if args.json:
        _write_json(args.json, metrics)
    return 0


def _cmd_eval_davis(args: argparse.Namespace) -> int:
    from s2d.eval.davis import evaluate_davis, format_davis_table

    report = evaluate_davis(args.gt, args.pred, protocol=args.protocol, sequences=args.sequences)
    print(format_davis_table(report))
    for w in report.get("warnings", []):
        print(f"note: {w}", file=sys.stderr)
    if args.json:
        _write_json(args.json, report)
    return 0


def _detect_format(path: Path) -> str:
    """Tell the input format from what the path is (a folder, a .json, a .txt) — never from its name."""
    if path.is_dir():
        return "davis"
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "ytvis"
    if suffix == ".txt":
        return "mots"
    if suffix == ".xml":
        return "cvat"
    raise InputError(path, "cannot tell the input format (expected a .json, a .txt, an .xml or a folder of PNGs); "
                           "pass --from ytvis|davis|mots|cvat")


def _read_input(args: argparse.Namespace) -> list:
    """Read IN as a list of VideoSegmentation (one per video)."""
    from s2d.io import formats

    src = Path(args.input)
    if not src.exists():
        raise InputError(src, "no such file or directory")
    fmt = args.src_format or _detect_format(src)
    if fmt == "ytvis":
        info = None
        if args.gt:
            from s2d.eval.ytvis import load_ytvis_gt
            info = load_ytvis_gt(args.gt)
        videos = formats.from_ytvis(str(src), videos_info=info)
        if args.video_id is not None:
            videos = [v for v in videos if v.video_id == args.video_id]
            if not videos:
                raise InputError(src, f"no video with video_id {args.video_id}")
        return videos
    if args.video_id is not None:
        raise InputError(src, "--video-id applies to YouTube-VIS input only")
    if fmt == "davis":
        pngs = [p for p in src.iterdir() if p.suffix.lower() == ".png"]
        if pngs:
            return [formats.read_davis(src)]
        subdirs = sorted(p for p in src.iterdir() if p.is_dir())
        if not subdirs:
            raise InputError(src, "no .png frames and no sequence folders")
        return [formats.read_davis(d) for d in subdirs]
    if fmt == "cvat":
        from s2d.io.formats.cvat import read_cvat

        return [read_cvat(src)]
    return [formats.read_mots(src)]


def _apply_video_source(videos: list, args: argparse.Namespace) -> list:
    """Take fps, frame names and the name from --video (one video), checking the frame size."""
    if not args.video:
        return videos
    from s2d.io.video import probe_video

    if len(videos) != 1:
        raise InputError(args.input, f"holds {len(videos)} videos; --video needs one (select with --video-id)")
    info = probe_video(args.video)
    v = videos[0]
    if (info.orig_height, info.orig_width) != (v.height, v.width):
        raise InputError(args.video, f"frame size {info.orig_width}x{info.orig_height} does not match the "
                                     f"results' {v.width}x{v.height}")
    if info.total_frames is not None and info.total_frames < v.num_frames:
        raise InputError(args.video, f"has {info.total_frames} frames, results have {v.num_frames}")
    from s2d.types import VideoSegmentation

    return [VideoSegmentation(v.height, v.width, v.num_frames, v.tracks, fps=info.fps or v.fps,
                              name=v.name or info.name, video_id=v.video_id, frame_names=v.frame_names)]


def _video_label(v, i: int) -> str:
    return v.name or (f"video{v.video_id}" if v.video_id is not None else f"video{i + 1}")


def _cmd_export(args: argparse.Namespace) -> int:
    from s2d.io import formats

    if args.to == "fiftyone":  # before any reading: a missing optional package is the first thing to say
        from s2d.io.formats.fiftyone import require_fiftyone

        require_fiftyone()
    videos = _apply_video_source(_read_input(args), args)
    if args.score_threshold > 0:
        videos = [v.with_tracks([t for t in v.tracks if t.score >= args.score_threshold]) for v in videos]
    out = Path(args.output)
    if args.to == "ytvis":
        if args.dataset:
            fields = None
            if args.video:  # also a labelset `s2d train --videos <folder of --video>` reads
                from s2d.keymasks.run import labelset_video_fields

                fields = [labelset_video_fields(args.video, videos[0].num_frames)]
            formats.write_ytvis_dataset(out, videos, video_fields=fields)
        else:
            formats.write_ytvis_results(out, videos)
        print(f"wrote {out} ({len(videos)} video(s))", file=sys.stderr)
    elif args.to == "davis":
        _write_per_video(videos, out, formats.write_davis, "")
        print(f"wrote DAVIS PNGs under {out} ({len(videos)} video(s))", file=sys.stderr)
    elif args.to == "mots":
        _write_per_video(videos, out, formats.write_mots, ".txt")
        print(f"wrote {out} ({len(videos)} video(s))", file=sys.stderr)
    elif args.to == "cvat":
        from s2d.io.formats.cvat import write_cvat

        _write_per_video(videos, out, write_cvat, ".xml")
        print(f"wrote {out} ({len(videos)} video(s), CVAT for video 1.1)", file=sys.stderr)
    elif args.to == "fiftyone":
        _export_fiftyone(videos, args)
    else:
        _export_overlay(videos, args, out)
    return 0


def _write_per_video(videos: list, out: Path, write: Callable[[Path, Any], Any], suffix: str) -> None:
    """One video: ``write(out, video)``; several: ``out/<video label><suffix>`` each."""
    if len(videos) == 1:
        write(out, videos[0])
        return
    out.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(videos):
        write(out / f"{_video_label(v, i)}{suffix}", v)


def _export_fiftyone(videos: list, args: argparse.Namespace) -> None:
    from s2d.io.formats.fiftyone import write_fiftyone

    if not args.video:
        raise InputError(args.input, "--to fiftyone needs --video SRC (the video file the dataset's sample shows)")
    dataset = write_fiftyone(args.output, [(videos[0], args.video)])
    print(f"wrote FiftyOne dataset {dataset.name!r} ({len(videos)} video(s)); open it with "
          f"fiftyone app launch {dataset.name}", file=sys.stderr)


def _export_overlay(videos: list, args: argparse.Namespace, out: Path) -> None:
    if not args.video:
        raise InputError(args.input, "--to overlay needs --video SRC (the frames to draw on)")
    from tqdm import tqdm

    from s2d.io.overlay import OverlayWriter
    from s2d.io.video import open_video

    v = videos[0]
    with open_video(args.video, end=v.num_frames) as stream:
        fps = v.fps or stream.info.fps or 25.0
        with OverlayWriter(out, fps, v.width, v.height) as writer:
            for frame in tqdm(stream, total=v.num_frames, desc="overlay", unit="frame",
                              disable=not sys.stderr.isatty()):
                writer.write(frame.rgb, v.frame(frame.index))
    print(f"wrote {out}", file=sys.stderr)


def _cmd_report(args: argparse.Namespace) -> int:
    from s2d.report import build_report

    html = build_report(args.outdir, output=args.output, eval_reports=args.eval_reports, title=args.title)
    print(f"wrote {html}", file=sys.stderr)
    return 0


def _cmd_discover(args: argparse.Namespace) -> int:
    from s2d.keymasks.run import DiscoverSettings, collect_inputs, run_discovery

    from s2d.tracking import parse_tracker_spec

    tracker, tracker_settings = parse_tracker_spec(args.tracker)
    settings = DiscoverSettings(tracker=tracker, tracker_settings=tracker_settings, backbone=args.backbone,
                                device=args.device, max_side=args.max_side, masks_from=args.masks,
                                cache_dir=args.cache_dir, threads=args.threads, method=args.method)
    settings = settings.with_overrides(args.overrides)
    if args.masks and not Path(args.masks).exists():
        raise InputError(args.masks, "no such file or directory")
    root, videos = collect_inputs(args.inputs, layout=args.layout, root=args.root)
    print(f"discover: {len(videos)} video(s) under {root}", file=sys.stderr)
    report = run_discovery(videos, args.output, settings, root=root, workers=args.workers,
                           ray_address=args.ray, resume=args.resume, progress=sys.stderr.isatty())
    print(f"discover: {len(report.done)} done, {len(report.skipped)} skipped, {len(report.failed)} failed; "
          f"wrote {report.merged}", file=sys.stderr)
    return EXIT_SOME_FAILED if report.failed else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from s2d.train import train
    from s2d.train.config import load_train_config
    from s2d.train.ddp import is_main_process

    load_train_config(args.config, args.overrides)  # settings first: a bad one never waits for the data checks
    resolve_device(args.device)
    for path, what in ((args.data, "pseudo-labels"), (args.videos, "videos root")):
        if not Path(path).exists():
            raise InputError(path, f"no such file or directory ({what})")
    results = train(args.config, args.data, args.videos, args.output, resume=args.resume,
                    overrides=args.overrides, stages=args.stages, device=args.device,
                    progress=sys.stderr.isatty())
    if not is_main_process():  # under torchrun only rank 0 reports (it wrote the files)
        return 0
    for stage, res in results.items():
        where = getattr(res, "model_path", None) or getattr(res, "checkpoint", None)
        print(f"train: {stage}: step {getattr(res, 'step', '?')} -> {where}", file=sys.stderr)
    return 0


def _segment_inputs(inputs: Sequence[str]) -> List[tuple]:
    """``(source, NAME)`` per input; two inputs with one NAME would write into the same folder."""

    out: List[tuple] = []
    seen: Dict[str, str] = {}
    from s2d.io.video import is_live_source, live_name

    for src in inputs:
        path = Path(os.path.expanduser(src))
        name = path.resolve().name if path.is_dir() else path.stem
        if is_live_source(src):
            name = live_name(src)
        elif not path.exists() and any(ch in src for ch in "*?["):  # a glob of frames: named after its folder
            from s2d.io.video import probe_video

            try:
                name = probe_video(src).name
            except S2DError:
                pass  # reported when the video's turn comes
        if name in seen:
            raise SettingError(f"{seen[name]} and {src} both write to OUTDIR/{name}; give them distinct names")
        seen[name] = src
        out.append((src, name))
    return out


def _cmd_segment(args: argparse.Namespace) -> int:
    from s2d.infer import SegmentConfig, load_model, parse_formats, segment_video
    from s2d.settings import apply_overrides

    formats = parse_formats(args.formats)
    cfg = SegmentConfig(model=args.model, score_threshold=args.score_threshold, max_objects=args.max_objects,
                        chunk=args.chunk, overlap=args.overlap, max_side=args.max_side, refine=args.refine,
                        device=args.device, split=args.split, online=args.online, backend=args.backend)
    cfg = apply_overrides(cfg, args.overrides, "segment")
    videos = _segment_inputs(args.inputs)
    model = load_model(cfg.model, cfg.device, online=cfg.online, backend=cfg.backend)
    failed = 0
    for src, name in videos:
        try:
            s = segment_video(src, args.output, cfg, formats, model=model, progress=sys.stderr.isatty(), name=name)
        except S2DError as exc:
            print(f"s2d: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"segment: {s.name}: {s.frames} frames, {s.objects} objects, {s.fps:.1f} frames/s -> {s.outdir}",
              file=sys.stderr)
        for note in s.notes:
            print(f"note: {s.name}: {note}", file=sys.stderr)
    if len(videos) > 1:
        print(f"segment: {len(videos) - failed} of {len(videos)} video(s) done, {failed} failed", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0


def _cmd_export_model(args: argparse.Namespace) -> int:
    from s2d.infer.onnx_backend import ExportSettings, OnnxVideoModel, compare_backends, export_onnx, require_extra
    from s2d.infer.weights import load_model

    if not args.onnx.lower().endswith(".onnx"):
        raise SettingError(f"--onnx {args.onnx}: the file name must end in .onnx")
    settings = ExportSettings(opset=args.opset).validate()
    require_extra("onnx", "onnxscript", *(["onnxruntime"] if args.check else []))
    model = load_model(args.model, "cpu")
    path = export_onnx(model, args.onnx, settings)
    print(f"export-model: wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {settings.opset})", file=sys.stderr)
    if args.check:
        import torch

        onnx_model = OnnxVideoModel(path, device="cpu")
        gen = torch.Generator().manual_seed(0)
        for t, (h, w) in ((2, (240, 320)), (5, (272, 480))):
            diff = compare_backends(model, onnx_model, torch.rand(t, 3, h, w, generator=gen))
            print(f"export-model: check {t}×{h}×{w}: max |Δ| logits {diff['logits']:.2e}, mask logits "
                  f"{diff['mask_logits']:.2e}; mask pixels that differ {diff['mask_flip_fraction']:.2e}",
                  file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- entry point
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some inputs failed, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except S2DError as exc:
        print(f"s2d: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("s2d: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `s2d eval ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
