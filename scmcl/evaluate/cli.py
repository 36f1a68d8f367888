"""``scmcl evaluate``: the face classifier, the naive baseline edit, one row of the evaluation,
the table and plot, and the report's training curves, contact sheets and video page."""

from __future__ import annotations

import argparse
import json

from scmcl.job import setup_job
from scmcl.options import add_settings, settings_values


def _face_classifier(args: argparse.Namespace) -> int:
    from scmcl.evaluate.face_classifier import FaceClassifierSettings, save_face_classifier, train_face_classifier
    from scmcl.io.atomic import atomic_path

    setup_job(args.threads)
    settings = FaceClassifierSettings(args.image_size, tuple(args.widths), args.steps, args.batch_size, args.lr, args.seed)
    model, report = train_face_classifier(args.shards, args.emotions, args.test_clips, settings, args.device)
    save_face_classifier(args.out, model, report)
    with atomic_path(args.report) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    print(f"face classifier -> {args.out}: held-out emotion accuracy {report['emotion_accuracy']:.3f} "
          f"(chance {report['chance']:.3f}), actor accuracy {report['actor_accuracy']:.3f}")
    return 0


def _naive(args: argparse.Namespace) -> int:
    from scmcl.evaluate.naive import naive_edit

    record = naive_edit(args.expressions, args.actor, (args.source_emotion, args.level, args.clip), args.emotion,
                        args.test_clips, args.out, args.record)
    print(f"naive edit of {record['source']} into {args.emotion} -> {args.out} (offset norm {record['offset_norm']:.3f})")
    return 0


def _score(args: argparse.Namespace) -> int:
    from scmcl.evaluate.face_classifier import load_face_classifier
    from scmcl.evaluate.score import Case, Scorer, score_row
    from scmcl.manipulator.classifier import load_classifier

    setup_job(args.threads)
    lists = {"videos": args.videos, "drivers": args.drivers, "truth_videos": args.truth_videos, "truth_clips": args.truth_clips}
    wrong = [name for name, values in lists.items() if len(values) != len(args.emotions)]
    if wrong:
        raise ValueError(f"--{', --'.join(w.replace('_', '-') for w in wrong)} need one item per --emotions ({len(args.emotions)})")
    face_model, _ = load_face_classifier(args.face_classifier, args.device)
    expression_model, _ = load_classifier(args.expression_classifier, args.device)
    scorer = Scorer(args.actor, args.clip, args.source_video, args.truth_expressions, face_model, expression_model)
    source_row = args.row == "source"
    cases = [Case(emotion, video, driver, "neutral" if source_row else emotion,
                  truth_clip if args.row == "truth" else args.source_clip, truth_video, truth_clip)
             for emotion, video, driver, truth_video, truth_clip
             in zip(args.emotions, args.videos, args.drivers, args.truth_videos, args.truth_clips)]
    table = score_row(args.row, args.actor, args.clip, cases, scorer, args.out)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _table(args: argparse.Namespace) -> int:
    from scmcl.evaluate.table import evaluation_plot, evaluation_table

    table = evaluation_table(args.rows, args.out)
    evaluation_plot(table, args.face_report, args.plot)
    print(table[table.emotion == "mean"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _curves(args: argparse.Namespace) -> int:
    from scmcl.evaluate.report import training_curves

    terms = training_curves(args.metrics, args.title, args.out)
    print(f"{args.metrics} -> {args.out}: {len(terms)} terms")
    return 0


def _sheet(args: argparse.Namespace) -> int:
    from scmcl.evaluate.report import contact_sheet

    if len(args.labels) != len(args.videos):
        raise ValueError(f"--labels gives {len(args.labels)} names for {len(args.videos)} --videos")
    contact_sheet(list(zip(args.labels, args.videos)), args.contact_frames, args.out)
    print(f"contact sheet of {len(args.videos)} videos, {args.contact_frames} frames -> {args.out}")
    return 0


def _page(args: argparse.Namespace) -> int:
    from scmcl.evaluate.report import videos_page

    entries = []
    for item in args.entry:  # "heading|label=video|label=video"
        heading, *videos = item.split("|")
        entries.append((heading, [tuple(v.split("=", 1)) for v in videos]))
    videos_page(entries, args.title, args.out)
    print(f"video page of {sum(len(videos) for _, videos in entries)} videos -> {args.out}/index.html")
    return 0


def _paper_weights(args: argparse.Namespace):
    from scmcl.evaluate.paper import PaperWeights

    return PaperWeights(**settings_values(args, "evaluate.paper.weights"))


def _paper_features(args: argparse.Namespace) -> int:
    from scmcl.evaluate.paper import paper_features, real_faces, video_faces
    from scmcl.renderer.windows import actor_clip_dirs

    setup_job(args.threads)
    if (args.video is None) == (args.shard is None):
        raise ValueError("give either --video with --clip-dir (an edit) or --shard (the real test clips)")
    if args.video is not None:
        faces = video_faces(args.video, args.clip_dir)
    else:
        faces = real_faces(actor_clip_dirs([args.shard], args.test_clips)[1])
    features = paper_features(faces, _paper_weights(args), args.device, args.out, args.video)
    print(f"{args.video or args.shard}: {len(faces)} faces, {', '.join(k for k in features if k != 'frames') or 'no'} "
          f"features -> {args.out}")
    return 0


def _paper_table(args: argparse.Namespace) -> int:
    from scmcl.evaluate.paper import Entry, paper_table

    for line in _paper_weights(args).skipped():
        print(line)
    table = paper_table([Entry(*entry) for entry in args.entry], args.out)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    stage = sub.add_parser("evaluate", help="the evaluation against the paired ground truth, and the report's figures")
    verbs = stage.add_subparsers(dest="verb", required=True)

    fc = verbs.add_parser("face-classifier", help="train the emotion and actor classifier on the corpus's aligned faces")
    add_settings(fc, "", ["emotions", "test_clips", "device", "threads"])
    add_settings(fc, "evaluate.face_classifier")
    fc.add_argument("--shards", nargs="+", required=True, help="the actors' preprocessing shard tables")
    fc.add_argument("--out", required=True, help="the classifier (torch file)")
    fc.add_argument("--report", required=True, help="its held-out figures (JSON)")
    fc.set_defaults(func=_face_classifier)

    naive = verbs.add_parser("naive", help="the naive baseline edit: the target emotion's mean expression offset added")
    add_settings(naive, "", ["test_clips"])
    naive.add_argument("--expressions", required=True, help="the actor's expression table")
    naive.add_argument("--actor", required=True)
    naive.add_argument("--clip", required=True, help="the source clip id")
    naive.add_argument("--source-emotion", required=True, help="the source clip's emotion (edit.source.emotion)")
    naive.add_argument("--level", type=int, required=True, help="the source clip's level (edit.source.level)")
    naive.add_argument("--emotion", required=True, help="the target emotion")
    naive.add_argument("--out", required=True, help="the edit table (Parquet, as scmcl manipulate writes)")
    naive.add_argument("--record", required=True, help="what made it (JSON)")
    naive.set_defaults(func=_naive)

    score = verbs.add_parser("score", help="one row of the evaluation: a method's videos against the paired truth")
    add_settings(score, "", ["device", "threads"])
    score.add_argument("--row", required=True, help="source, naive, ned, scmcl or truth")
    score.add_argument("--actor", required=True)
    score.add_argument("--clip", required=True, help="the test clip id")
    score.add_argument("--emotions", nargs="+", required=True, help="the target emotions, one per video")
    score.add_argument("--videos", nargs="+", required=True, help="the row's video per emotion")
    score.add_argument("--drivers", nargs="+", required=True, help="the expression table that drove each video")
    score.add_argument("--truth-videos", nargs="+", required=True, help="the paired ground-truth video per emotion")
    score.add_argument("--truth-clips", nargs="+", required=True, help="their preprocessed clip folders")
    score.add_argument("--truth-expressions", required=True, help="the paired truth's expression table")
    score.add_argument("--source-video", required=True, help="the unedited source video (its mouth track and audio)")
    score.add_argument("--source-clip", required=True, help="its preprocessed clip folder (cuts the edits' faces)")
    score.add_argument("--face-classifier", required=True)
    score.add_argument("--expression-classifier", required=True)
    score.add_argument("--out", required=True, help="the row's figures (TSV)")
    score.set_defaults(func=_score)

    table = verbs.add_parser("table", help="the evaluation table (TSV) and plot (PNG) from the rows")
    table.add_argument("--rows", nargs="+", required=True, help="the rows' TSVs (scmcl evaluate score)")
    table.add_argument("--face-report", required=True, help="the face classifier's held-out report")
    table.add_argument("--out", required=True)
    table.add_argument("--plot", required=True)
    table.set_defaults(func=_table)

    curves = verbs.add_parser("curves", help="a trainer's metrics table drawn as curves (PNG)")
    curves.add_argument("--metrics", required=True)
    curves.add_argument("--title", required=True)
    curves.add_argument("--out", required=True)
    curves.set_defaults(func=_curves)

    sheet = verbs.add_parser("sheet", help="a contact sheet: frames of several videos side by side (PNG)")
    add_settings(sheet, "evaluate", ["contact_frames"])
    sheet.add_argument("--labels", nargs="+", required=True)
    sheet.add_argument("--videos", nargs="+", required=True)
    sheet.add_argument("--out", required=True)
    sheet.set_defaults(func=_sheet)

    features = verbs.add_parser("paper-features", help="the paper metrics' features of an edit's faces or of the real test clips")
    add_settings(features, "", ["test_clips", "device", "threads"])
    add_settings(features, "evaluate.paper.weights")
    features.add_argument("--video", help="an edited video (its faces, audio and frame rate)")
    features.add_argument("--clip-dir", help="the edit's source clip folder (cuts the video's faces)")
    features.add_argument("--shard", help="real frames: the test clips (test_clips) of this shard table")
    features.add_argument("--out", required=True, help="the features (npz)")
    features.set_defaults(func=_paper_features)

    paper = verbs.add_parser("paper-table", help="one protocol's table of FAD, CSIM and LSE-D/C per emotion and method")
    add_settings(paper, "evaluate.paper.weights")
    paper.add_argument("--entry", nargs=4, action="append", required=True, metavar=("METHOD", "ACTOR", "EMOTION", "FEATURES"),
                       help="a feature file: METHOD ned, scmcl or real")
    paper.add_argument("--out", required=True, help="the table (TSV)")
    paper.set_defaults(func=_paper_table)

    page = verbs.add_parser("page", help="an HTML page playing videos, with the videos beside it")
    page.add_argument("--title", required=True)
    page.add_argument("--entry", nargs="+", required=True, metavar="HEADING|LABEL=VIDEO|...")
    page.add_argument("--out", required=True, help="the page's folder (index.html and the videos)")
    page.set_defaults(func=_page)
