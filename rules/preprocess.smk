# Preprocessing stage: dataset manifest, then one resumable job per (actor, emotion) shard,
# then the per-actor expression table used by the SCMC metric and the manipulator.


rule corpus_manifest:
    input:
        corpus_files(),
    output:
        "work/corpus/manifest.parquet",
    log:
        "logs/corpus_manifest.log",
    benchmark:
        "benchmarks/corpus_manifest.tsv"
    conda:
        "../envs/scmcl.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        command=manifest_command(),
        root=dataset_root,
        # A user's dataset tree is no input of the workflow: its listing's digest is a param, so a
        # replaced, added or removed clip reruns the scan (Snakemake's params trigger).
        listing=dataset_listing,
        actors=" ".join(ALL_ACTORS),
        emotions=" ".join(config["emotions"]),
        levels=" ".join(map(str, config["levels"])),
    shell:
        "scmcl corpus {params.command} {params.root} --out {output} --actors {params.actors}"
        " --emotions {params.emotions} --levels {params.levels} --workers {threads} > {log} 2>&1"


rule preprocess_shard:
    input:
        manifest="work/corpus/manifest.parquet",
        model=config["flame"]["model"],
        landmarks=config["flame"]["landmark_embedding"],
    output:
        "work/preprocess/{actor}/{emotion}.parquet",
    log:
        "logs/preprocess_shard/{actor}/{emotion}.log",
    benchmark:
        "benchmarks/preprocess_shard/{actor}/{emotion}.tsv"
    conda:
        "../envs/scmcl.yaml"
    threads: 1  # the landmark fit is fastest on one torch thread; shards run in parallel
    resources:
        mem_mb=mem_mb(8000),
        runtime=runtime_min(120),
        **gpu_resources(),
    params:
        clip_root=shard_clip_root,
        data_root=dataset_root,
        settings=" ".join([flags("preprocess"), DEVICE]),
    shell:
        "scmcl preprocess shard --manifest {input.manifest} --actor {wildcards.actor}"
        " --emotion {wildcards.emotion} --clip-root {params.clip_root} --out {output}"
        " --model {input.model} --landmarks {input.landmarks} --data-root {params.data_root}"
        " {params.settings} --threads {threads} > {log} 2>&1"


rule expression_table:
    input:
        expand("work/preprocess/{{actor}}/{emotion}.parquet", emotion=config["emotions"]),
    output:
        "work/preprocess/{actor}/expressions.parquet",
    log:
        "logs/expression_table/{actor}.log",
    conda:
        "../envs/scmcl.yaml"
    shell:
        "scmcl preprocess expressions --shards {input} --out {output} > {log} 2>&1"
