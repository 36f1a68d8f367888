"""``scmcl edit video``: one edited clip (an edit table of ``scmcl manipulate``) rendered into the
source video, with a JSON record of the source, the settings and every model file used."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from scmcl.job import setup_job
from scmcl.options import add_settings


def _files(paths: dict[str, str]) -> dict[str, dict[str, str]]:
    return {name: {"path": path, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()} for name, path in paths.items()}


def _video(args: argparse.Namespace) -> int:
    from scmcl.device import resolve_device
    from scmcl.edit.video import render_edit
    from scmcl.io.atomic import atomic_path
    from scmcl.renderer.checkpoint import load_network
    from scmcl.renderer.networks import Generator, RendererSizes
    from scmcl.renderer.rerender import Rerenderer

    setup_job(args.threads)
    device = resolve_device(args.device)
    generator = load_network(args.renderer, Generator(RendererSizes(args.ngf, args.downsample, args.blocks, args.frames)))
    rerender = Rerenderer(args.model, args.landmarks, device)
    figures = render_edit(args.edit, args.clip_dir, args.video, generator, rerender, args.blend, args.out)
    edit_record = json.loads(Path(args.edit_record).read_text())
    record = {"video": args.out, "source_video": args.video, "source_clip": args.clip_dir, **figures,
              "edit": edit_record, "files": _files({"edit": args.edit, "renderer": args.renderer,
                                                    "flame_model": args.model, "flame_landmarks": args.landmarks})}
    with atomic_path(args.record) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{args.edit} -> {args.out}: {figures['frames']} frames at {figures['fps']:g} fps, {args.blend} blend")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    edit = sub.add_parser("edit", help="edited videos: the renderer on edited expressions, blended into the source")
    verbs = edit.add_subparsers(dest="verb", required=True)
    video = verbs.add_parser("video", help="render one edit into its source video, with the source's audio")
    add_settings(video, "", ["device", "threads"])
    add_settings(video, "renderer.networks", ["ngf", "downsample", "blocks", "frames"])
    add_settings(video, "edit", ["blend"])
    video.add_argument("--edit", required=True, help="the edit table (scmcl manipulate --out)")
    video.add_argument("--edit-record", required=True, help="the edit's record (scmcl manipulate --record)")
    video.add_argument("--renderer", required=True, help="the actor's renderer generator (XX_net_G.pth layout)")
    video.add_argument("--clip-dir", required=True, help="the source clip's preprocessed folder")
    video.add_argument("--video", required=True, help="the source video (its frames and audio)")
    video.add_argument("--model", required=True, help="FLAME model (flame.model)")
    video.add_argument("--landmarks", required=True, help="FLAME landmark embedding (flame.landmark_embedding)")
    video.add_argument("--out", required=True, help="the edited video (MP4)")
    video.add_argument("--record", required=True, help="what made it (JSON)")
    video.set_defaults(func=_video)
