# Evaluation on the synthetic corpus (its paired ground truth): the face classifier, the naive
# baseline's edits, one scored row per method and renderer actor (source, naive, NED,
# NED+SCMCL, truth), results/evaluation.tsv and .png; and the report's contact sheets,
# training curves and video page.


rule train_face_classifier:
    input:
        shards=expand("work/preprocess/{actor}/{emotion}.parquet", actor=config["actors"], emotion=config["emotions"]),
    output:
        weights="work/evaluate/face_classifier.pt",
        report="work/evaluate/face_classifier.json",
    log:
        "logs/train_face_classifier.log",
    benchmark:
        "benchmarks/train_face_classifier.tsv"
    conda:
        "../envs/scmcl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime_min(60),
        **gpu_resources(),
    params:
        settings=" ".join([flags("", ["emotions", "test_clips"]), flags("evaluate.face_classifier")]),
    shell:
        "scmcl evaluate face-classifier --shards {input.shards} {params.settings} --out {output.weights}"
        " --report {output.report} --threads {threads} --device {resources.device} > {log} 2>&1"


rule naive_edit:
    input:
        "work/preprocess/{actor}/expressions.parquet",
    output:
        edit="work/evaluate/naive/{actor}/{clip}_{emotion}.parquet",
        record="work/evaluate/naive/{actor}/{clip}_{emotion}.json",
    log:
        "logs/naive_edit/{actor}/{clip}_{emotion}.log",
    wildcard_constraints:
        clip=TEST_CLIP,
    conda:
        "../envs/scmcl.yaml"
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime_min(10),
    params:
        source=EDIT_SOURCE_FLAGS,
        settings=flags("", ["test_clips"]),
    shell:
        "scmcl evaluate naive --expressions {input} --actor {wildcards.actor} --clip {wildcards.clip} {params.source}"
        " --emotion {wildcards.emotion} {params.settings} --out {output.edit} --record {output.record} > {log} 2>&1"


rule evaluate_row:
    input:
        unpack(evaluation_row_inputs),
    output:
        "work/evaluate/{actor}/{row}.tsv",
    log:
        "logs/evaluate_row/{actor}/{row}.log",
    benchmark:
        "benchmarks/evaluate_row/{actor}/{row}.tsv"
    wildcard_constraints:
        actor="|".join(RENDERER_ACTORS),
        row="|".join(EVALUATION_ROWS),
    conda:
        "../envs/scmcl.yaml"
    threads: 1
    resources:
        device="cpu",  # requests no GPU, so it runs on the CPU wherever it goes
        mem_mb=mem_mb(4000),
        runtime=runtime_min(30),
    params:
        clip=EDIT_CLIP,
        emotions=" ".join(EDIT_EMOTIONS),
        clips=evaluation_row_flags,
    shell:
        "scmcl evaluate score --row {wildcards.row} --actor {wildcards.actor} --clip {params.clip} --emotions {params.emotions}"
        " --videos {input.videos} --drivers {input.drivers} --truth-videos {input.truth_videos} {params.clips}"
        " --truth-expressions {input.truth_expressions} --source-video {input.source_video}"
        " --face-classifier {input.face_classifier} --expression-classifier {input.expression_classifier}"
        " --out {output} --threads {threads} --device {resources.device} > {log} 2>&1"


rule evaluation_table:
    input:
        rows=expand("work/evaluate/{actor}/{row}.tsv", actor=RENDERER_ACTORS, row=EVALUATION_ROWS),
        face_report="work/evaluate/face_classifier.json",
    output:
        table=report("results/evaluation.tsv", category="Evaluation", caption="../report/evaluation_table.rst"),
        plot=report("results/evaluation.png", category="Evaluation", caption="../report/evaluation_plot.rst"),
    log:
        "logs/evaluation_table.log",
    conda:
        "../envs/scmcl.yaml"
    resources:
        mem_mb=mem_mb(2000),
        runtime=runtime_min(10),
    shell:
        "scmcl evaluate table --rows {input.rows} --face-report {input.face_report} --out {output.table}"
        " --plot {output.plot} > {log} 2>&1"


rule contact_sheet:
    input:
        contact_sheet_videos,
    output:
        report("work/evaluate/{actor}/sheet_{emotion}.png", category="Edits", subcategory="{actor}",
               caption="../report/contact_sheet.rst", labels={"actor": "{actor}", "emotion": "{emotion}"}),
    log:
        "logs/contact_sheet/{actor}/{emotion}.log",
    wildcard_constraints:
        actor="|".join(RENDERER_ACTORS),
    conda:
        "../envs/scmcl.yaml"
    params:
        settings=flags("evaluate", ["contact_frames"]),
    shell:
        "scmcl evaluate sheet --labels source naive NED NED+SCMCL truth --videos {input} {params.settings}"
        " --out {output} > {log} 2>&1"


rule training_curves:
    input:
        "work/{trainer}.metrics.tsv",
    output:
        report("work/report/curves/{trainer}.png", category="Training curves", caption="../report/training_curves.rst",
               labels={"trainer": "{trainer}"}),
    log:
        "logs/training_curves/{trainer}.log",
    conda:
        "../envs/scmcl.yaml"
    shell:
        "scmcl evaluate curves --metrics {input} --title {wildcards.trainer} --out {output} > {log} 2>&1"


rule videos_page:
    input:
        videos=video_page_videos(),
    output:
        report(directory("work/report/videos"), htmlindex="index.html", category="Edits",
               caption="../report/videos_page.rst"),
    log:
        "logs/videos_page.log",
    conda:
        "../envs/scmcl.yaml"
    params:
        entries=video_page_entries,
    shell:
        "scmcl evaluate page --title 'Edited videos' --entry {params.entries} --out {output} > {log} 2>&1"


# The SPFEM papers' metrics (FAD, emotion CSIM, LSE-D/C) on reference-driven edits, intra-ID and
# cross-ID, from the user's network files (evaluate.paper.weights): one feature file per edited
# video and per actor's real test clips of an emotion, then one table per protocol.


rule paper_real_features:
    input:
        shard="work/preprocess/{actor}/{emotion}.parquet",
    output:
        "work/paper/real/{actor}/{emotion}.npz",
    log:
        "logs/paper_real_features/{actor}/{emotion}.log",
    benchmark:
        "benchmarks/paper_real_features/{actor}/{emotion}.tsv"
    conda:
        "../envs/scmcl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(6000),
        runtime=runtime_min(30),
        **gpu_resources(),
    params:
        settings=" ".join([flags("", ["test_clips"]), flags("evaluate.paper.weights", ["arcface", "efficientface"])]),
        weights=paper_weight_state(["arcface", "efficientface"]),  # real clips have no lip-sync score
    shell:
        "scmcl evaluate paper-features --shard {input.shard} {params.settings} --out {output} --threads {threads} --device {resources.device} > {log} 2>&1"


rule paper_edit_features:
    input:
        video="work/edit/{variant}/{actor}/{clip}_{emotion}_ref_{ref_actor}.mp4",
        shard=SOURCE_SHARD,
    output:
        "work/paper/{variant}/{actor}/{clip}_{emotion}_ref_{ref_actor}.npz",
    log:
        "logs/paper_edit_features/{variant}/{actor}/{clip}_{emotion}_ref_{ref_actor}.log",
    benchmark:
        "benchmarks/paper_edit_features/{variant}/{actor}/{clip}_{emotion}_ref_{ref_actor}.tsv"
    wildcard_constraints:
        variant="|".join(VARIANTS),
        clip=TEST_CLIP,
        ref_actor="|".join(ALL_ACTORS),
    conda:
        "../envs/scmcl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(6000),
        runtime=runtime_min(30),
        **gpu_resources(),
    params:
        clip_dir=source_clip_dir,
        settings=PAPER_WEIGHTS,
        weights=paper_weight_state(),
    shell:
        "scmcl evaluate paper-features --video {input.video} --clip-dir {params.clip_dir} {params.settings} --out {output}"
        " --threads {threads} --device {resources.device} > {log} 2>&1"


rule paper_table:
    input:
        lambda wildcards: [entry[3] for entry in paper_entries(wildcards.protocol)],
    output:
        report("results/paper_{protocol}.tsv", category="Evaluation", caption="../report/paper_table.rst",
               labels={"protocol": "{protocol}"}),
    log:
        "logs/paper_table/{protocol}.log",
    wildcard_constraints:
        protocol="|".join(PAPER_PROTOCOLS),
    conda:
        "../envs/scmcl.yaml"
    resources:
        mem_mb=mem_mb(4000),
        runtime=runtime_min(10),
    params:
        entries=lambda wildcards: " ".join(f"--entry {' '.join(entry)}" for entry in paper_entries(wildcards.protocol)),
        settings=PAPER_WEIGHTS,
        weights=paper_weight_state(),
    shell:
        "scmcl evaluate paper-table {params.entries} {params.settings} --out {output} > {log} 2>&1"


rule paper_metrics:
    input:
        paper_files(),
