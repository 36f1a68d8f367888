# Expression manipulator: the emotion classifier (the edits' judge), NED training and SCMCL
# fine-tuning (`{variant}`), edits of the held-out neutral test clips, and the ablation table.
# Trainers checkpoint under work/train/<rule>_<variant>/ and resume on a rerun. A variant whose
# manipulator.weights entry names a released checkpoint is validated and copied instead.


rule train_classifier:
    input:
        actor_expressions(config["actors"]),
    output:
        weights="work/manipulator/classifier.pt",
        report="work/manipulator/classifier.json",
    log:
        "logs/train_classifier.log",
    benchmark:
        "benchmarks/train_classifier.tsv"
    conda:
        "../envs/scmcl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime_min(60),
        **gpu_resources(),
    params:
        settings=" ".join([flags("", ["emotions", "test_clips"]), flags("manipulator.classifier")]),
    shell:
        "scmcl manipulator classifier --expressions {input} {params.settings} --out {output.weights}"
        " --report {output.report} --threads {threads} --device {resources.device} > {log} 2>&1"


if TRAINED_VARIANTS:

    rule train_manipulator:
        input:
            unpack(manipulator_inputs),
        output:
            weights="work/manipulator/{variant}.pth",
            metrics="work/manipulator/{variant}.metrics.tsv",
        log:
            "logs/train_manipulator/{variant}.log",
        benchmark:
            "benchmarks/train_manipulator/{variant}.tsv"
        wildcard_constraints:
            variant="|".join(TRAINED_VARIANTS),
        conda:
            "../envs/scmcl.yaml"
        threads: THREADS
        priority: TRAIN_PRIORITY
        resources:
            mem_mb=mem_mb(8000),
            runtime=runtime_min(720),
            **gpu_resources(),
        params:
            data=manipulator_data_flags,
            settings=manipulator_settings,
            run_dir="work/train/train_manipulator_{variant}",
        shell:
            "scmcl manipulator train {wildcards.variant} {params.data} {params.settings} --run-dir {params.run_dir}"
            " --out {output.weights} --metrics {output.metrics} --threads {threads} --device {resources.device} > {log} 2>&1"


if RELEASED_VARIANTS:

    rule import_manipulator:
        input:
            released=lambda wildcards: MANIPULATOR["weights"][wildcards.variant],
        output:
            weights="work/manipulator/{variant}.pth",
        log:
            "logs/import_manipulator/{variant}.log",
        wildcard_constraints:
            variant="|".join(RELEASED_VARIANTS),
        conda:
            "../envs/scmcl.yaml"
        resources:
            device="cpu",  # requests no GPU, so it runs on the CPU wherever it goes
            mem_mb=mem_mb(2000),
            runtime=runtime_min(10),
        params:
            settings=NETWORK_FLAGS,
        shell:
            "scmcl manipulator import {wildcards.variant} {input.released} {params.settings} --out {output.weights} --device {resources.device} > {log} 2>&1"


rule manipulate:
    input:
        weights="work/manipulator/{variant}.pth",
        expressions="work/preprocess/{actor}/expressions.parquet",
        manifest="work/corpus/manifest.parquet",
    output:
        edit="work/manipulator/edits/{variant}/{actor}/{clip}_{emotion}.parquet",
        record="work/manipulator/edits/{variant}/{actor}/{clip}_{emotion}.json",
    log:
        "logs/manipulate/{variant}/{actor}/{clip}_{emotion}.log",
    wildcard_constraints:
        variant="|".join(VARIANTS),
        clip=TEST_CLIP,
    conda:
        "../envs/scmcl.yaml"
    resources:
        device="cpu",  # requests no GPU, so it runs on the CPU wherever it goes
        mem_mb=mem_mb(2000),
        runtime=runtime_min(10),
    params:
        settings=EDIT_SETTINGS,
    shell:
        edit_command(reference=False)


rule manipulate_reference:
    input:
        weights="work/manipulator/{variant}.pth",
        expressions="work/preprocess/{actor}/expressions.parquet",
        reference="work/preprocess/{ref_actor}/expressions.parquet",
        manifest="work/corpus/manifest.parquet",
    output:
        edit="work/manipulator/edits/{variant}/{actor}/{clip}_{emotion}_ref_{ref_actor}.parquet",
        record="work/manipulator/edits/{variant}/{actor}/{clip}_{emotion}_ref_{ref_actor}.json",
    log:
        "logs/manipulate/{variant}/{actor}/{clip}_{emotion}_ref_{ref_actor}.log",
    wildcard_constraints:
        variant="|".join(VARIANTS),
        clip=TEST_CLIP,
        ref_actor="|".join(ALL_ACTORS),
    conda:
        "../envs/scmcl.yaml"
    resources:
        device="cpu",  # requests no GPU, so it runs on the CPU wherever it goes
        mem_mb=mem_mb(2000),
        runtime=runtime_min(10),
    params:
        settings=EDIT_SETTINGS,
    shell:
        edit_command(reference=True)


rule manipulator_ablation:
    input:
        edits=[edit for variant in VARIANTS for edit in label_edits(variant)],
        expressions=actor_expressions(config["actors"]),
        paired=paired_files(),
        classifier="work/manipulator/classifier.pt",
    output:
        table="work/manipulator/ablation.tsv",
        per_edit="work/manipulator/ablation_edits.tsv",
    log:
        "logs/manipulator_ablation.log",
    conda:
        "../envs/scmcl.yaml"
    resources:
        device="cpu",  # requests no GPU, so it runs on the CPU wherever it goes
        mem_mb=mem_mb(4000),
        runtime=runtime_min(30),
    params:
        edits=" ".join(f"{variant}={edit}" for variant in VARIANTS for edit in label_edits(variant)),
    shell:
        "scmcl manipulator ablation --edits {params.edits} --expressions {input.expressions} --paired {input.paired}"
        " --classifier {input.classifier} --out {output.table} --per-edit {output.per_edit} --device {resources.device} > {log} 2>&1"
