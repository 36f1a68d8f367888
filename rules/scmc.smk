# SCMC metric: DTW alignment of same-sentence clips, contrastive training of the audio, 3DMM and
# image encoders, joint audio<->visual fine-tuning, per-actor offline audio distances.
# Training rules checkpoint under work/train/<rule>/ (not outputs, so a failed or killed job
# keeps them) and a rerun of the same command resumes from the last checkpoint.
# A trainer whose scmc.weights entry names SCMCL's released file is replaced by a rule of the
# same name and outputs that only converts that file (`scmcl scmc import`), with no training inputs.
# Per trainer: memory (MB), runtime (min) of the first attempt; retries scale them.
TRAIN_RESOURCES = {"audio": (8000, 720), "expression": (4000, 480), "image": (16000, 1440)}
RELEASED = {name: path for name, path in SCMC["weights"].items() if path}


rule align_audio:
    input:
        "work/corpus/manifest.parquet",
    output:
        "work/scmc/aligned_pairs.parquet",
    log:
        "logs/align_audio.log",
    benchmark:
        "benchmarks/align_audio.tsv"
    conda:
        "../envs/scmcl.yaml"
    threads: THREADS
    priority: TRAIN_PRIORITY
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime_min(60),
    params:
        actors=" ".join(SCMC_ACTORS),
        settings=" ".join([flags("scmc", ["pairs", "clip_offsets", "sample_rate"]), flags("", ["test_clips"])]),
    shell:
        "scmcl scmc align --manifest {input} --out {output} --actors {params.actors} {params.settings}"
        " --threads {threads} > {log} 2>&1"


for name, released in RELEASED.items():

    rule:
        name:
            f"finetune_scmc_{name.removeprefix('finetune_')}" if name.startswith("finetune_") else f"train_scmc_{name}"
        input:
            released=released,
        output:
            weights=f"work/scmc/{name}.pt",
            metrics=f"work/scmc/{name}.metrics.tsv",
            evaluation=f"work/scmc/{name}.eval.json",
        log:
            f"logs/import_scmc_{name}.log",
        conda:
            "../envs/scmcl.yaml"
        resources:
            mem_mb=mem_mb(4000),
            runtime=runtime_min(10),
        params:
            name=name,
        shell:
            "scmcl scmc import {params.name} {input.released} --out {output.weights} --metrics {output.metrics}"
            " --eval {output.evaluation} > {log} 2>&1"


for modality in [m for m in ("audio", "expression", "image") if m not in RELEASED]:

    rule:
        name:
            f"train_scmc_{modality}"
        input:
            manifest="work/corpus/manifest.parquet",
            pairs="work/scmc/aligned_pairs.parquet",
            **MODALITY_INPUTS[modality],
        output:
            weights=f"work/scmc/{modality}.pt",
            metrics=f"work/scmc/{modality}.metrics.tsv",
            evaluation=f"work/scmc/{modality}.eval.json",
        log:
            f"logs/train_scmc_{modality}.log",
        benchmark:
            f"benchmarks/train_scmc_{modality}.tsv"
        conda:
            "../envs/scmcl.yaml"
        threads: THREADS
        priority: TRAIN_PRIORITY
        resources:
            mem_mb=mem_mb(TRAIN_RESOURCES[modality][0]),
            runtime=runtime_min(TRAIN_RESOURCES[modality][1]),
            **gpu_resources(),
        params:
            modality=modality,
            settings=training_flags(modality, "train"),
            tables=table_flags(modality),
            run_dir=f"work/train/train_scmc_{modality}",
        shell:
            "scmcl scmc train {params.modality} --manifest {input.manifest} --pairs {input.pairs} {params.tables}"
            " {params.settings} --run-dir {params.run_dir} --out {output.weights} --metrics {output.metrics}"
            " --eval {output.evaluation} --threads {threads} --device {resources.device} > {log} 2>&1"


for visual in [v for v in ("expression", "image") if f"finetune_{v}" not in RELEASED]:

    rule:
        name:
            f"finetune_scmc_{visual}"
        input:
            manifest="work/corpus/manifest.parquet",
            pairs="work/scmc/aligned_pairs.parquet",
            audio="work/scmc/audio.pt",
            visual=f"work/scmc/{visual}.pt",
            **MODALITY_INPUTS[visual],
        output:
            weights=f"work/scmc/finetune_{visual}.pt",
            metrics=f"work/scmc/finetune_{visual}.metrics.tsv",
            evaluation=f"work/scmc/finetune_{visual}.eval.json",
        log:
            f"logs/finetune_scmc_{visual}.log",
        benchmark:
            f"benchmarks/finetune_scmc_{visual}.tsv"
        conda:
            "../envs/scmcl.yaml"
        threads: THREADS
        priority: TRAIN_PRIORITY
        resources:
            mem_mb=mem_mb(TRAIN_RESOURCES[visual][0]),
            runtime=runtime_min(TRAIN_RESOURCES[visual][1]),
            **gpu_resources(),
        params:
            visual=visual,
            settings=training_flags(visual, "finetune"),
            tables=table_flags(visual),
            run_dir=f"work/train/finetune_scmc_{visual}",
        shell:
            "scmcl scmc finetune {params.visual} --manifest {input.manifest} --pairs {input.pairs} {params.tables}"
            " {params.settings} --audio-weights {input.audio} --visual-weights {input.visual} --run-dir {params.run_dir}"
            " --out {output.weights} --metrics {output.metrics} --eval {output.evaluation} --threads {threads} --device {resources.device} > {log} 2>&1"


rule scmc_dists:
    input:
        manifest="work/corpus/manifest.parquet",
        expressions="work/preprocess/{actor}/expressions.parquet",
        weights="work/scmc/finetune_{visual}.pt",
    output:
        windows="work/scmc/dists_{visual}/{actor}/windows.parquet",
        matrices=expand("work/scmc/dists_{{visual}}/{{actor}}/{emotion}.npy", emotion=[e for e in config["emotions"] if e != "neutral"]),
    log:
        "logs/scmc_dists/{visual}/{actor}.log",
    benchmark:
        "benchmarks/scmc_dists/{visual}/{actor}.tsv"
    wildcard_constraints:
        visual="expression|image",
    conda:
        "../envs/scmcl.yaml"
    threads: THREADS
    priority: TRAIN_PRIORITY
    resources:
        mem_mb=mem_mb(8000),
        runtime=runtime_min(60),
        **gpu_resources(),
    params:
        out_dir=lambda wildcards, output: str(Path(output.windows).parent),
        settings=" ".join([flags("scmc.dists"), flags("scmc", ["sample_rate"])]),
    shell:
        "scmcl scmc dists --weights {input.weights} --manifest {input.manifest} --expressions {input.expressions}"
        " --actor {wildcards.actor} --out-dir {params.out_dir} {params.settings} --threads {threads} --device {resources.device} > {log} 2>&1"
