# Per-actor neural face renderer: NED training and SCMCL fine-tuning (`{variant}`) for each actor
# of renderer.actors, and held-out scores beside the mean face and NMFC retrieval. Trainers
# checkpoint under work/train/train_renderer_<variant>_<actor>/ and resume on a rerun. A released
# generator named in renderer.weights.<variant>.<actor> is validated and copied instead, to its
# own path (renderer_weights picks the one a consumer reads).

RENDERER = config["renderer"]
RENDERER_ACTORS = RENDERER["actors"] or config["actors"]
RENDERER_NETWORKS = " ".join([flags("renderer.networks"), DEVICE])
RENDERER_VARIANTS = ["ned", "scmcl"]


def renderer_weights(variant, actor):
    """The generator of (variant, actor): the imported release, or the trained file."""
    if actor in RENDERER["weights"][variant]:
        return f"work/renderer/released/{variant}/{actor}.pth"
    return f"work/renderer/{actor}/{variant}.pth"


def renderer_shards(wildcards):
    """The actor's preprocessing shard tables: they list its clip folders."""
    return expand("work/preprocess/{actor}/{emotion}.parquet", actor=wildcards.actor, emotion=config["emotions"])


def renderer_inputs(wildcards):
    """ned: the actor's shards (and renderer.pretrained when set); scmcl also the actor's ned
    renderer, the scmcl manipulator, the fine-tuned image metric and its distances, the FLAME files."""
    inputs = {"shards": renderer_shards(wildcards)}
    if wildcards.variant == "ned" and RENDERER["pretrained"]:
        inputs["pretrained"] = RENDERER["pretrained"]
    if wildcards.variant == "scmcl":
        inputs |= {"init": renderer_weights("ned", wildcards.actor), "manipulator": "work/manipulator/scmcl.pth",
                   "expressions": f"work/preprocess/{wildcards.actor}/expressions.parquet",
                   "windows": f"work/scmc/dists_image/{wildcards.actor}/windows.parquet",
                   "metric": "work/scmc/finetune_image.pt", "model": config["flame"]["model"],
                   "landmarks": config["flame"]["landmark_embedding"]}
    return inputs


def renderer_data_flags(wildcards, input):
    """The trainer's data flags from its own inputs (the distance folder holds the windows)."""
    data = f"--shards {' '.join(input.shards)}"
    if wildcards.variant == "scmcl":
        data += (f" --init {input.init} --manipulator {input.manipulator} --expressions {input.expressions}"
                 f" --distances {Path(input.windows).parent} --metric {input.metric} --model {input.model}"
                 f" --landmarks {input.landmarks}")
    return data


def renderer_settings(wildcards):
    variant = wildcards.variant
    own = ["vgg_weights", "pretrained"] if variant == "ned" else ["vgg_weights", "lpips_weights", "lpips_backbone"]
    manipulator = [flags("", ["emotions"]), flags("manipulator.networks"), flags("scmc.dists", ["seq_len"])] if variant == "scmcl" else []
    return " ".join([RENDERER_NETWORKS, flags("", ["test_clips"]), flags("renderer", own), *manipulator,
                     flags("renderer.train"), flags(f"renderer.{variant}")])


def renderer_files():
    """Every renderer actor's held-out scores and sample grid, per variant."""
    return [f"work/renderer/{actor}/{variant}.eval.tsv" for actor in RENDERER_ACTORS for variant in RENDERER_VARIANTS]



rule train_renderer:
    input:
        unpack(renderer_inputs),
    output:
        weights="work/renderer/{actor}/{variant}.pth",
        metrics="work/renderer/{actor}/{variant}.metrics.tsv",
        samples=report("work/renderer/{actor}/{variant}.samples.png", category="Renderer",
                       caption="../report/renderer_samples.rst"),
    log:
        "logs/train_renderer/{variant}/{actor}.log",
    benchmark:
        "benchmarks/train_renderer/{variant}/{actor}.tsv"
    wildcard_constraints:
        variant="|".join(RENDERER_VARIANTS),
        actor="|".join(RENDERER_ACTORS),
    conda:
        "../envs/scmcl.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb(8000),
        runtime=runtime_min(1440),
        **gpu_resources(),
    params:
        data=renderer_data_flags,
        settings=renderer_settings,
        run_dir="work/train/train_renderer_{variant}_{actor}",
    shell:
        "scmcl renderer train {wildcards.variant} {params.data} {params.settings} --run-dir {params.run_dir}"
        " --out {output.weights} --metrics {output.metrics} --samples {output.samples} --threads {threads} > {log} 2>&1"


rule import_renderer:
    input:
        released=lambda wildcards: RENDERER["weights"][wildcards.variant][wildcards.actor],
    output:
        weights="work/renderer/released/{variant}/{actor}.pth",
    log:
        "logs/import_renderer/{variant}/{actor}.log",
    wildcard_constraints:
        variant="|".join(RENDERER_VARIANTS),
    conda:
        "../envs/scmcl.yaml"
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime_min(10),
    params:
        settings=RENDERER_NETWORKS,
    shell:
        "scmcl renderer import {wildcards.variant} {input.released} {params.settings} --out {output.weights} > {log} 2>&1"


rule evaluate_renderer:
    input:
        weights=lambda wildcards: renderer_weights(wildcards.variant, wildcards.actor),
        shards=renderer_shards,
    output:
        scores="work/renderer/{actor}/{variant}.eval.tsv",
        grid=report("work/renderer/{actor}/{variant}.eval.png", category="Renderer",
                    caption="../report/renderer_eval.rst"),
    log:
        "logs/evaluate_renderer/{variant}/{actor}.log",
    benchmark:
        "benchmarks/evaluate_renderer/{variant}/{actor}.tsv"
    wildcard_constraints:
        variant="|".join(RENDERER_VARIANTS),
        actor="|".join(RENDERER_ACTORS),
    conda:
        "../envs/scmcl.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime_min(30),
        **gpu_resources(),
    params:
        settings=" ".join([RENDERER_NETWORKS, flags("", ["test_clips"])]),
    shell:
        "scmcl renderer evaluate --weights {input.weights} --shards {input.shards} {params.settings}"
        " --out {output.scores} --grid {output.grid} --threads {threads} > {log} 2>&1"
