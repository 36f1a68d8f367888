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


def _manifest_video(manifest: str, edit_record: str) -> str:
    """The source video of an edit: the manifest's row of the clip its record names, so the
    workflow never rebuilds a dataset path from one layout (RAVDESS's files keep their names)."""
    from scmcl.io import clip_data as cd

    key = cd.parse_clip_id(json.loads(Path(edit_record).read_text())["source"])
    table = cd.read_table(manifest, [*cd.CLIP_KEY, "video"], cd.rerun("manifest"), "the manifest")
    rows = table[(table[cd.CLIP_KEY] == list(key)).all(axis=1)]
    if rows.empty:
        raise ValueError(f"{manifest} has no clip {cd.clip_id(*key)}, the source of {edit_record}: rerun the corpus "
                         "manifest rule, or check test_clips and edit.source")
    return str(rows.video.iloc[0])


def _video(args: argparse.Namespace) -> int:
    from scmcl.device import resolve_device
    from scmcl.edit.video import render_edit
    from scmcl.io.atomic import atomic_path
    from scmcl.renderer.checkpoint import load_network
    from scmcl.renderer.networks import Generator, RendererSizes
    from scmcl.renderer.rerender import Rerenderer

    setup_job(args.threads)
    args.video = args.video or _manifest_video(args.manifest, args.edit_record)
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
    print(f"{args.edit} -> {args.out}: {figures['frames']} frames at {figures['fps']:g} fps, {args.blend} blend"
          + ("" if figures["audio"] else f", silent: {args.video} has no audio stream"))
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
    source = video.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="the source video (its frames and audio)")
    source.add_argument("--manifest", help="the corpus manifest: the source video is its row of the edit's source clip")
    video.add_argument("--model", required=True, help="FLAME model (flame.model)")
    video.add_argument("--landmarks", required=True, help="FLAME landmark embedding (flame.landmark_embedding)")
    video.add_argument("--out", required=True, help="the edited video (MP4)")
    video.add_argument("--record", required=True, help="what made it (JSON)")
    video.set_defaults(func=_video)
