# SCMC metric: DTW alignment of same-sentence clips, contrastive training of the audio, 3DMM and
# image encoders, joint audio<->visual fine-tuning, per-actor offline audio distances.
# Training rules checkpoint under work/train/<rule>/ (not outputs, so a failed or killed job
# keeps them) and a rerun of the same command resumes from the last checkpoint.
# Per trainer: threads, memory (MB), runtime (min) of the first attempt; retries scale them.
TRAIN_RESOURCES = {"audio": (2, 8000, 720), "expression": (2, 4000, 480), "image": (4, 16000, 1440)}


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
    threads: 2
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime_min(60),
    params:
        actors=" ".join(SCMC_ACTORS),
        pairs=SCMC["pairs"],
        offsets=" ".join(f"{e}={o}" for e, o in SCMC["clip_offsets"].items()),
        validation=SCMC["validation_pairs"],
        sample_rate=SCMC["sample_rate"],
    shell:
        "scmcl scmc align --manifest {input} --out {output} --actors {params.actors} --pairs {params.pairs}"
        " --offsets {params.offsets} --validation-pairs {params.validation}"
        " --sample-rate {params.sample_rate} --threads {threads} > {log} 2>&1"


for modality in ("audio", "expression", "image"):

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
        threads: TRAIN_RESOURCES[modality][0]
        resources:
            mem_mb=mem_mb(TRAIN_RESOURCES[modality][1]),
            runtime=runtime_min(TRAIN_RESOURCES[modality][2]),
            gpu=uses_gpu(),
        params:
            modality=modality,
            flags=training_flags(modality, "train"),
            pretrained=optional_flag("--pretrained", SCMC["image_pretrained"]) if modality == "image" else "",
            run_dir=f"work/train/train_scmc_{modality}",
            device=config["device"],
        shell:
            "scmcl scmc train {params.modality} --manifest {input.manifest} --pairs {input.pairs} {params.flags}"
            " {params.pretrained} --run-dir {params.run_dir} --out {output.weights} --metrics {output.metrics}"
            " --eval {output.evaluation} --device {params.device} --threads {threads} > {log} 2>&1"


for visual in ("expression", "image"):

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
        threads: TRAIN_RESOURCES[visual][0]
        resources:
            mem_mb=mem_mb(TRAIN_RESOURCES[visual][1]),
            runtime=runtime_min(TRAIN_RESOURCES[visual][2]),
            gpu=uses_gpu(),
        params:
            visual=visual,
            flags=training_flags(visual, "finetune"),
            run_dir=f"work/train/finetune_scmc_{visual}",
            device=config["device"],
        shell:
            "scmcl scmc finetune {params.visual} --manifest {input.manifest} --pairs {input.pairs} {params.flags}"
            " --audio-weights {input.audio} --visual-weights {input.visual} --run-dir {params.run_dir}"
            " --out {output.weights} --metrics {output.metrics} --eval {output.evaluation}"
            " --device {params.device} --threads {threads} > {log} 2>&1"


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
    threads: 2
    resources:
        mem_mb=mem_mb(8000),
        runtime=runtime_min(60),
        gpu=uses_gpu(),
    params:
        out_dir=lambda wildcards, output: str(Path(output.windows).parent),
        dists=SCMC["dists"],
        sample_rate=SCMC["sample_rate"],
        device=config["device"],
    shell:
        "scmcl scmc dists --weights {input.weights} --manifest {input.manifest} --expressions {input.expressions}"
        " --actor {wildcards.actor} --out-dir {params.out_dir} --seq-len {params.dists[seq_len]}"
        " --hop {params.dists[hop]} --batch {params.dists[batch]} --chunk {params.dists[chunk]}"
        " --sample-rate {params.sample_rate} --device {params.device} --threads {threads} > {log} 2>&1"
