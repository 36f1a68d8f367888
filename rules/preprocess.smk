# Preprocessing stage: dataset manifest, then one resumable job per (actor, emotion) shard,
# then the per-actor expression table used by the SCMC metric and the manipulator.
# One definition per step for every tree of PREPROCESS_TREES (rules/common.smk): the corpus
# (corpus_manifest, preprocess_shard, expression_table) and, on the synthetic corpus, the paired
# ground truth of the test clips (paired_manifest, paired_preprocess_shard, paired_expression_table),
# so both go through the same scan, the same preprocessing command and the same settings.


rule actor_identity:
    """The actor's one face for the landmark fit (preprocess.identity_clips neutral clips); the
    corpus's and the paired ground truth's shards of the actor keep it."""
    input:
        manifest=CORPUS_TREE.manifest,
        model=config["flame"]["model"],
        landmarks=config["flame"]["landmark_embedding"],
    output:
        "work/preprocess/{actor}/identity.json",
    log:
        "logs/actor_identity/{actor}.log",
    benchmark:
        "benchmarks/actor_identity/{actor}.tsv"
    wildcard_constraints:
        actor="|".join(ALL_ACTORS),
    conda:
        "../envs/scmcl.yaml"
    priority: TRAIN_PRIORITY
    threads: 1  # as a shard: the landmark fit is fastest on one torch thread
    resources:
        mem_mb=mem_mb(8000),
        runtime=runtime_min(60),
        **gpu_resources(),
    params:
        data_root=CORPUS_TREE.root,
        settings=" ".join([flags("preprocess")]),
    shell:
        "scmcl preprocess identity --manifest {input.manifest} --actor {wildcards.actor} --out {output}"
        " --model {input.model} --landmarks {input.landmarks} --data-root {params.data_root}"
        " {params.settings} --threads {threads} --device {resources.device} > {log} 2>&1"


for tree in PREPROCESS_TREES:

    rule:
        name:
            tree.rule("manifest")
        input:
            tree.clips,
        output:
            tree.manifest,
        log:
            f"logs/{tree.rule('manifest')}.log",
        benchmark:
            f"benchmarks/{tree.rule('manifest')}.tsv"
        conda:
            "../envs/scmcl.yaml"
        threads: THREADS  # its ffprobe workers
        priority: tree.priority
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            command=tree.command,
            root=tree.root,
            # A user's dataset tree is no input of the workflow: its listing's digest is a param, so a
            # replaced, added or removed clip reruns the scan (Snakemake's params trigger).
            listing=tree.listing,
            actors=" ".join(tree.actors),
            emotions=" ".join(tree.emotions),
            levels=" ".join(map(str, tree.levels)),
        shell:
            "scmcl corpus {params.command} {params.root} --out {output} --actors {params.actors}"
            " --emotions {params.emotions} --levels {params.levels} --workers {threads} > {log} 2>&1"

    rule:
        name:
            tree.rule("preprocess_shard")
        input:
            manifest=tree.manifest,
            model=config["flame"]["model"],
            landmarks=config["flame"]["landmark_embedding"],
            identity=actor_identity,
        output:
            f"{tree.preprocess}/{{actor}}/{{emotion}}.parquet",
        log:
            f"logs/{tree.rule('preprocess_shard')}/{{actor}}/{{emotion}}.log",
        benchmark:
            f"benchmarks/{tree.rule('preprocess_shard')}/{{actor}}/{{emotion}}.tsv"
        wildcard_constraints:
            actor="|".join(tree.actors),
            emotion="|".join(tree.emotions),
        conda:
            "../envs/scmcl.yaml"
        priority: tree.priority
        threads: 1  # the landmark fit is fastest on one torch thread; shards run in parallel
        resources:
            mem_mb=mem_mb(8000),
            runtime=runtime_min(120),
            **gpu_resources(),
        params:
            clip_root=shard_clip_root,
            data_root=tree.root,
            settings=" ".join([flags("preprocess")]),
        shell:
            "scmcl preprocess shard --manifest {input.manifest} --actor {wildcards.actor}"
            " --emotion {wildcards.emotion} --clip-root {params.clip_root} --out {output}"
            " --model {input.model} --landmarks {input.landmarks} --data-root {params.data_root}"
            " --identity '{input.identity}' {params.settings} --threads {threads} --device {resources.device} > {log} 2>&1"

    rule:
        name:
            tree.rule("expression_table")
        input:
            expand(f"{tree.preprocess}/{{{{actor}}}}/{{emotion}}.parquet", emotion=tree.emotions),
        output:
            f"{tree.preprocess}/{{actor}}/expressions.parquet",
        log:
            f"logs/{tree.rule('expression_table')}/{{actor}}.log",
        wildcard_constraints:
            actor="|".join(tree.actors),
        conda:
            "../envs/scmcl.yaml"
        priority: tree.priority
        shell:
            "scmcl preprocess expressions --shards {input} --out {output} > {log} 2>&1"
